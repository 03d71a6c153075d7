//! A fake Kraken: see the module doc of `loopback`.
