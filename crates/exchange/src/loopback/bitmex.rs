//! A fake BitMEX: see the module doc of `loopback`.
