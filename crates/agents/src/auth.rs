//! Holder authorizations: the "validation stamp" a holder puts on an allocation, which the
//! desk checks before it lets an order through.
//!
//! A holder's ed25519 key is derived from the data dir's secret (kept outside the log and
//! never logged) and the holder's name — and, under [`KeyScope::Lifetime`], its generation —
//! so a replay re-derives the same keys and reproduces the same signatures byte for byte.
//! The public key travels in each lifetime's `agent_spawned` event; the desk verifies
//! allocations against the latest one it saw.
//!
//! What is signed is the allocation's canonical text, every field but the signature, in a
//! fixed order: `crypy-allocation-v1|id|proposal|holder|trader|pair|asset|amount|expires_at|nonce`.

use std::fmt;
use std::sync::OnceLock;

use crypy_core::event::{Allocation, PublicKey, Signature};
use crypy_core::AgentId;
use curve25519_dalek::Scalar;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Which lifetimes of a holder share a key (the holder template's `[authorization] key`).
///
/// Every key derives from the same data-dir secret, so a key per lifetime does not protect
/// more than a key per asset: what stops a retired lifetime's allocation from being used
/// again is the desk's nonce check (nonces are unique across a holder's lifetimes), and a
/// retired holder decides nothing. A fresh key costs an ed25519 key derivation (a fixed-base
/// scalar multiplication and a compression, ~25 µs) at every lifetime, which is at every
/// position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// One key for every lifetime of the holder of an asset.
    Asset,
    /// A new key at each lifetime. What a template that does not say gets: the only
    /// scheme before `key` existed, so logs recorded then replay as they were made.
    #[default]
    Lifetime,
}

/// A holder's signing key. Its `Debug` never shows the key.
pub struct HolderKey {
    signing: SigningKey,
    /// The secret scalar and nonce prefix, for [`HolderKey::recognize`]: expanding the key
    /// costs a hash, which the agents, who only sign, never need.
    expanded: OnceLock<ExpandedSecretKey>,
}

impl fmt::Debug for HolderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HolderKey(public {})", self.public())
    }
}

impl HolderKey {
    /// The key of `holder`'s `generation`-th lifetime under the data dir's `secret`.
    pub fn derive(secret: &[u8], holder: &AgentId, generation: u32, scope: KeyScope) -> Self {
        let mut h = Sha512::new();
        h.update(match scope {
            KeyScope::Lifetime => b"crypy holder key v1\0",
            KeyScope::Asset => b"crypy holder key v2\0",
        });
        h.update((secret.len() as u64).to_le_bytes());
        h.update(secret);
        h.update(holder.to_string().as_bytes());
        h.update(b"\0");
        if scope == KeyScope::Lifetime {
            h.update(generation.to_le_bytes());
        }
        let digest = h.finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest[..32]);
        HolderKey { signing: memo::key(&seed, || SigningKey::from_bytes(&seed)), expanded: OnceLock::new() }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `allocation` (its current signature is ignored and replaced).
    pub fn sign(&self, allocation: &mut Allocation) {
        let message = signing_bytes(allocation);
        let public = self.signing.verifying_key().to_bytes();
        let signature = memo::signature(&public, &message, || self.signing.sign(&message).to_bytes());
        // A signature this key just made over these bytes verifies (a derived key is never
        // weak, an honest signature always canonical): the desk's check of it needs no
        // curve arithmetic. Any other signature or message is checked in full.
        memo::remember_verdict(&public, &message, &signature, Ok(()));
        allocation.signature = Signature(signature);
    }

    /// Whether `allocation`'s signature is exactly the one this key makes over its fields,
    /// told without signing's curve arithmetic. A signature recognized is remembered as made
    /// (see [`sign`](Self::sign)): a replay recognizes the recorded allocations as it reads
    /// them, and its agents, signing them again, find them here.
    ///
    /// Ed25519 signs `M` as `(R, S)`: `r = H(prefix ‖ M)`, `R = r·B`, `S = r + H(R ‖ A ‖ M)·a`,
    /// where `prefix` and `a` are the key's secrets. This recomputes `S` from the recorded
    /// `R`: two hashes and a scalar product, where signing also multiplies the base point by
    /// `r` (nine tenths of its instructions). It accepts an `R` other than `r·B` only if `S`
    /// was computed from `a` and `r` for that `R`, which takes the data dir's secret: nobody
    /// without it can alter a recorded signature or field and have it recognized. The
    /// comparison takes the same time wherever the bytes differ, since the computed `S` is a
    /// secret until it equals the recorded one.
    pub fn recognize(&self, allocation: &Allocation) -> bool {
        let message = signing_bytes(allocation);
        let (recorded_r, recorded_s) = allocation.signature.0.split_at(32);
        let secret = self.expanded.get_or_init(|| ExpandedSecretKey::from(self.signing.as_bytes()));
        let public = self.signing.verifying_key().to_bytes();
        let r = scalar_of(Sha512::new().chain_update(secret.hash_prefix).chain_update(&message));
        let k = scalar_of(Sha512::new().chain_update(recorded_r).chain_update(public).chain_update(&message));
        let s = r + k * secret.scalar;
        if !bool::from(s.as_bytes().as_slice().ct_eq(recorded_s)) {
            return false;
        }
        let signature = allocation.signature.0;
        memo::signature(&public, &message, || signature);
        memo::remember_verdict(&public, &message, &signature, Ok(()));
        true
    }
}

/// A SHA-512 digest reduced modulo the group order, as ed25519 does.
fn scalar_of(hash: Sha512) -> Scalar {
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The canonical text an allocation's signature covers.
///
/// Written byte by byte rather than through `format!`: it is made at every signature, check
/// and recognition, and `fmt`'s machinery was a tenth of a replay's worker (the text is the
/// same, property test).
pub fn signing_bytes(a: &Allocation) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"crypy-allocation-v1|");
    append_integer(&mut out, false, u128::from(a.id));
    out.push(b'|');
    append_integer(&mut out, false, u128::from(a.proposal));
    out.push(b'|');
    a.holder.append_text(&mut out);
    out.push(b'|');
    a.trader.append_text(&mut out);
    out.push(b'|');
    a.pair.append_text(&mut out);
    out.push(b'|');
    a.asset.append_text(&mut out);
    out.push(b'|');
    append_decimal(&mut out, a.amount.normalize().value());
    out.push(b'|');
    append_integer(&mut out, a.expires_at < 0, u128::from(a.expires_at.unsigned_abs()));
    out.push(b'|');
    append_integer(&mut out, false, u128::from(a.nonce));
    out
}

/// `n`'s decimal digits, after a minus sign if `negative`.
fn append_integer(out: &mut Vec<u8>, negative: bool, n: u128) {
    append_digits(out, negative, n, 0);
}

/// `d` as its `Display` writes it (no exponent, exactly its scale's digits after the point).
fn append_decimal(out: &mut Vec<u8>, d: rust_decimal::Decimal) {
    append_digits(out, d.is_sign_negative(), d.mantissa().unsigned_abs(), d.scale() as usize);
}

/// `magnitude / 10^scale` in decimal, with at least one digit before the point.
fn append_digits(out: &mut Vec<u8>, negative: bool, mut magnitude: u128, scale: usize) {
    // 39 digits hold any u128; a decimal's scale is at most 28.
    let mut digits = [b'0'; 40];
    let mut start = digits.len();
    // In 128 bits only while it needs them: each 128-bit division is a call of its own.
    while magnitude > u128::from(u64::MAX) {
        start -= 1;
        digits[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
    }
    let mut narrow = magnitude as u64;
    while narrow > 0 {
        start -= 1;
        digits[start] = b'0' + (narrow % 10) as u8;
        narrow /= 10;
    }
    start = start.min(digits.len() - scale - 1);
    if negative {
        out.push(b'-');
    }
    let point = digits.len() - scale;
    out.extend_from_slice(&digits[start..point]);
    if scale > 0 {
        out.push(b'.');
        out.extend_from_slice(&digits[point..]);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("not a valid ed25519 public key")]
    BadKey,
    #[error("signature does not match the allocation and the holder's key")]
    BadSignature,
}

/// Checks that `holder_key` signed exactly this allocation.
pub fn verify(holder_key: &PublicKey, allocation: &Allocation) -> Result<(), AuthError> {
    let message = signing_bytes(allocation);
    memo::verdict(&holder_key.0, &message, &allocation.signature.0, || {
        verify_in_full(holder_key, &message, &allocation.signature)
    })
}

/// The curve arithmetic of [`verify`], with nothing remembered.
fn verify_in_full(holder_key: &PublicKey, message: &[u8], signature: &Signature) -> Result<(), AuthError> {
    let key = VerifyingKey::from_bytes(&holder_key.0).map_err(|_| AuthError::BadKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &sig).map_err(|_| AuthError::BadSignature)
}

/// The keys derived, signatures made and verdicts given lately, in this process. A desk
/// replaying history runs its agents twice (the dataflow's and a shadow on another thread,
/// which runs ahead by up to a few thousand inputs, see crypy-dataflow), and the second
/// would repeat every ed25519 operation of the first; these are pure functions of their
/// inputs, so the second asks here first. Bounded: the oldest entry goes first.
mod memo {
    use std::collections::{HashMap, VecDeque};
    use std::hash::{BuildHasherDefault, Hash, Hasher};
    use std::sync::{LazyLock, Mutex};

    use ed25519_dalek::SigningKey;

    use super::AuthError;

    /// Enough for the positions a shadow can be ahead of the dataflow (two epochs of 4,096
    /// inputs), with room for a few desks running side by side.
    const KEPT: usize = 2048;

    struct Recent<K, V> {
        values: HashMap<K, V, BuildHasherDefault<Quick>>,
        order: VecDeque<K>,
    }

    impl<K: Eq + Hash + Clone, V: Clone> Recent<K, V> {
        fn new() -> Self {
            Recent { values: HashMap::default(), order: VecDeque::new() }
        }
    }

    /// A multiply-rotate hash, eight bytes a step: the keys are a few hundred bytes (a key,
    /// an allocation's text, a signature), and SipHash over them was a fifth of a
    /// recognition. The table is small and bounded, and its keys are the desk's own
    /// decisions or the log it replays, so collisions could only slow it, never mislead it.
    #[derive(Default)]
    struct Quick(u64);

    impl Hasher for Quick {
        fn write(&mut self, bytes: &[u8]) {
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
            }
        }

        fn finish(&self) -> u64 {
            self.0
        }
    }

    fn get_or<K: Eq + Hash + Clone, V: Clone>(memo: &Mutex<Recent<K, V>>, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = memo.lock().unwrap_or_else(|p| p.into_inner()).values.get(&key) {
            return v.clone();
        }
        // Computed outside the lock: another thread may compute the same meanwhile, and
        // both get the same value.
        let value = make();
        let mut m = memo.lock().unwrap_or_else(|p| p.into_inner());
        if m.values.insert(key.clone(), value.clone()).is_none() {
            m.order.push_back(key);
            if m.order.len() > KEPT {
                if let Some(oldest) = m.order.pop_front() {
                    m.values.remove(&oldest);
                }
            }
        }
        value
    }

    type Keys = Recent<[u8; 32], SigningKey>;
    type Signatures = Recent<([u8; 32], Vec<u8>), [u8; 64]>;
    type Verdicts = Recent<([u8; 32], Vec<u8>, [u8; 64]), Result<(), AuthError>>;

    static KEYS: LazyLock<Mutex<Keys>> = LazyLock::new(|| Mutex::new(Recent::new()));
    static SIGNATURES: LazyLock<Mutex<Signatures>> = LazyLock::new(|| Mutex::new(Recent::new()));
    static VERDICTS: LazyLock<Mutex<Verdicts>> = LazyLock::new(|| Mutex::new(Recent::new()));

    pub(super) fn key(seed: &[u8; 32], make: impl FnOnce() -> SigningKey) -> SigningKey {
        get_or(&KEYS, *seed, make)
    }

    pub(super) fn signature(public: &[u8; 32], message: &[u8], make: impl FnOnce() -> [u8; 64]) -> [u8; 64] {
        get_or(&SIGNATURES, (*public, message.to_vec()), make)
    }

    pub(super) fn remember_verdict(
        public: &[u8; 32],
        message: &[u8],
        signature: &[u8; 64],
        verdict: Result<(), AuthError>,
    ) {
        let _ = get_or(&VERDICTS, (*public, message.to_vec(), *signature), || verdict);
    }

    pub(super) fn verdict(
        public: &[u8; 32],
        message: &[u8],
        signature: &[u8; 64],
        make: impl FnOnce() -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        get_or(&VERDICTS, (*public, message.to_vec(), *signature), make)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypy_core::Money;

    fn allocation() -> Allocation {
        Allocation {
            id: 1,
            proposal: 7,
            holder: "EUR".parse().unwrap(),
            trader: "XBT/EUR#1".parse().unwrap(),
            pair: "XBT/EUR".parse().unwrap(),
            asset: "EUR".parse().unwrap(),
            amount: "2500".parse::<Money>().unwrap(),
            expires_at: 1_700_000_000_000,
            nonce: 1,
            signature: Signature([0; 64]),
        }
    }

    use KeyScope::{Asset, Lifetime};

    fn public(secret: &[u8], holder: &str, generation: u32, scope: KeyScope) -> PublicKey {
        HolderKey::derive(secret, &holder.parse().unwrap(), generation, scope).public()
    }

    #[test]
    fn keys_are_reproducible_and_specific() {
        for scope in [Asset, Lifetime] {
            assert_eq!(public(b"s", "EUR", 1, scope), public(b"s", "EUR", 1, scope));
            assert_ne!(public(b"s", "EUR", 1, scope), public(b"t", "EUR", 1, scope));
            assert_ne!(public(b"s", "EUR", 1, scope), public(b"s", "XBT", 1, scope));
            assert!(!format!("{:?}", HolderKey::derive(b"s", &"EUR".parse().unwrap(), 1, scope)).contains("SigningKey"));
        }
        assert_ne!(public(b"s", "EUR", 1, Lifetime), public(b"s", "EUR", 2, Lifetime));
        assert_eq!(public(b"s", "EUR", 1, Asset), public(b"s", "EUR", 2, Asset));
        assert_ne!(public(b"s", "EUR", 1, Asset), public(b"s", "EUR", 1, Lifetime));
    }

    /// Logs recorded before the scope existed hold per-lifetime keys derived exactly so: a
    /// change here would make every one of them fail `replay --verify`. The keys are those a
    /// `crypy sim` built before the scope existed published for its EUR holder's first two
    /// lifetimes, in a data dir with this secret.
    #[test]
    fn per_lifetime_keys_are_derived_as_they_always_were() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let first = "41b2d22e542911e08ee423e8342a6ef1d76f02d3a6023cc6a1f03fd4eb55e79e";
        let second = "09f7fdf8f85a19f4f32c26d720ea634f4c9d5178645a70dd2eec7fc284d0fd87";
        assert_eq!(public(secret, "EUR", 1, Lifetime).to_string(), first);
        assert_eq!(public(secret, "EUR", 2, Lifetime).to_string(), second);
    }

    #[test]
    fn only_the_holders_signature_on_the_exact_allocation_verifies() {
        let eur: AgentId = "EUR".parse().unwrap();
        let key = HolderKey::derive(b"secret", &eur, 1, Lifetime);
        let mut a = allocation();
        key.sign(&mut a);
        assert_eq!(verify(&key.public(), &a), Ok(()));
        // Same bytes again: a replay re-derives the key and gets the same signature.
        let mut again = allocation();
        HolderKey::derive(b"secret", &eur, 1, Lifetime).sign(&mut again);
        assert_eq!(again.signature, a.signature);
        // Anyone else's key, or any changed field, fails.
        let other = HolderKey::derive(b"secret", &"XBT".parse().unwrap(), 1, Lifetime);
        assert_eq!(verify(&other.public(), &a), Err(AuthError::BadSignature));
        let mut more = a.clone();
        more.amount = "25000".parse().unwrap();
        assert_eq!(verify(&key.public(), &more), Err(AuthError::BadSignature));
        let mut later = a.clone();
        later.expires_at += 1;
        assert_eq!(verify(&key.public(), &later), Err(AuthError::BadSignature));
        let mut unsigned = a.clone();
        unsigned.signature = Signature([0; 64]);
        assert_eq!(verify(&key.public(), &unsigned), Err(AuthError::BadSignature));
    }

    /// [`allocation`] for `amount` cents under `nonce`.
    fn allocation_of(amount: u64, nonce: u64) -> Allocation {
        Allocation { amount: Money::new(rust_decimal::Decimal::new(amount as i64, 2)), nonce, ..allocation() }
    }

    /// The signature `key` makes over `a`, computed here rather than taken from the memo.
    fn made_by(key: &HolderKey, a: &Allocation) -> Signature {
        Signature(key.signing.sign(&signing_bytes(a)).to_bytes())
    }

    /// The group order ℓ, little-endian.
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    #[test]
    fn only_the_signature_the_key_makes_is_recognized() {
        let eur: AgentId = "EUR".parse().unwrap();
        let key = HolderKey::derive(b"recognition", &eur, 1, Asset);
        let mut a = allocation();
        a.signature = made_by(&key, &a);
        assert!(key.recognize(&a));
        assert_eq!(verify_in_full(&key.public(), &signing_bytes(&a), &a.signature), Ok(()));
        // Another key's signature of the same fields, and the same signature on other fields.
        let other = HolderKey::derive(b"recognition", &"XBT".parse().unwrap(), 1, Asset);
        assert!(!key.recognize(&Allocation { signature: made_by(&other, &a), ..a.clone() }));
        assert!(!key.recognize(&Allocation { nonce: a.nonce + 1, ..a.clone() }));
        assert!(!key.recognize(&Allocation { amount: "2500.01".parse().unwrap(), ..a.clone() }));
        // S + ℓ is the same scalar, written otherwise: a different signature, not recognized.
        let mut wrapped = a.clone();
        let mut carry = 0u16;
        for (byte, order) in wrapped.signature.0[32..].iter_mut().zip(ORDER) {
            let sum = *byte as u16 + order as u16 + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!key.recognize(&wrapped));
    }

    /// The text as `format!` wrote it before signing_bytes wrote bytes itself.
    fn formatted(a: &Allocation) -> Vec<u8> {
        format!(
            "crypy-allocation-v1|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            a.id,
            a.proposal,
            a.holder,
            a.trader,
            a.pair,
            a.asset,
            a.amount.normalize(),
            a.expires_at,
            a.nonce
        )
        .into_bytes()
    }

    #[test]
    fn the_signed_text_of_edge_amounts_is_what_it_always_was() {
        for (lo, negative, scale) in [
            (0, false, 0),
            (0, true, 0),
            (0, true, 28),
            (0, false, 5),
            (1, false, 28),
            (1, true, 3),
            (10, false, 1),
            (123_456, true, 6),
        ] {
            let mut a = allocation();
            a.amount = Money::new(rust_decimal::Decimal::from_parts(lo, 0, 0, negative, scale));
            a.expires_at = -1;
            assert_eq!(String::from_utf8(signing_bytes(&a)).unwrap(), String::from_utf8(formatted(&a)).unwrap());
        }
    }

    proptest::proptest! {
        /// Every signature made so far covers this text: not one byte of it may change.
        #[test]
        fn the_signed_text_is_what_it_always_was(
            id in proptest::num::u64::ANY,
            proposal in proptest::num::u64::ANY,
            generation in proptest::num::u32::ANY,
            lo in proptest::num::u64::ANY,
            hi in proptest::num::u32::ANY,
            wide in proptest::bool::ANY,
            scale in 0u32..=28,
            negative in proptest::bool::ANY,
            expires_at in proptest::num::i64::ANY,
            nonce in proptest::num::u64::ANY,
        ) {
            let mut a = allocation();
            a.id = id;
            a.proposal = proposal;
            a.trader = AgentId::Trader { pair: a.pair, generation };
            let hi = if wide { hi } else { 0 };
            let lo = if wide { lo } else { lo % 1_000_000 };
            let amount = rust_decimal::Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale);
            a.amount = Money::new(amount);
            a.expires_at = expires_at;
            a.nonce = nonce;
            proptest::prop_assert_eq!(
                String::from_utf8(signing_bytes(&a)).unwrap(),
                String::from_utf8(formatted(&a)).unwrap()
            );
        }
    }

    proptest::proptest! {
        /// A recorded signature is recognized if and only if it is, byte for byte, what the
        /// key makes: any change to any byte of it is refused.
        #[test]
        fn recognition_is_exactly_equality_with_what_the_key_makes(
            secret in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            amount in 1u64..10_000_000,
            nonce in 0u64..1000,
            at in 0usize..64,
            flip in 1u8..=255,
        ) {
            let eur: AgentId = "EUR".parse().unwrap();
            let key = HolderKey::derive(&secret, &eur, 1, Asset);
            let mut a = allocation_of(amount, nonce);
            a.signature = made_by(&key, &a);
            let mut altered = a.clone();
            altered.signature.0[at] ^= flip;
            proptest::prop_assert!(!key.recognize(&altered));
            proptest::prop_assert!(key.recognize(&a));
            // Recognized, it is what signing gives.
            let mut signed = a.clone();
            key.sign(&mut signed);
            proptest::prop_assert_eq!(signed.signature, a.signature);
        }
    }

    proptest::proptest! {
        /// What `sign` tells the desk's check without curve arithmetic is what the
        /// arithmetic says.
        #[test]
        fn every_signature_made_verifies_in_full(
            secret in proptest::collection::vec(proptest::num::u8::ANY, 1..40),
            generation in 1u32..1000,
            amount in 1u64..10_000_000,
            nonce in 0u64..1000,
            per_asset in proptest::bool::ANY,
        ) {
            let eur: AgentId = "EUR".parse().unwrap();
            let key = HolderKey::derive(&secret, &eur, generation, if per_asset { Asset } else { Lifetime });
            let mut a = allocation_of(amount, nonce);
            key.sign(&mut a);
            proptest::prop_assert_eq!(verify_in_full(&key.public(), &signing_bytes(&a), &a.signature), Ok(()));
            proptest::prop_assert_eq!(verify(&key.public(), &a), Ok(()));
        }
    }
}
