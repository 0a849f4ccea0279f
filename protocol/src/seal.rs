//! Sealing: CBOR message -> Fernet token, behind a small clear header.
//!
//! Layout: `b"GM"`, envelope version (1 byte), key id (8 bytes), Fernet token
//! (URL-safe base64 text). The key id is a hash of the key, public by design: it lets a
//! receiver tell "sent by another mesh" apart from "tampered with", and reject either
//! before spending an HMAC on it.

use base64::Engine as _;

use crate::keys::MeshKeys;
use crate::wire::{
    BodyReply, Envelope, EnvelopeRef, LookupReply, Message, VersionProbe, MESSAGE_VERSION,
};

const MAGIC: &[u8; 2] = b"GM";
/// Version of the outer envelope layout.
pub const ENVELOPE_VERSION: u8 = 1;
const HEADER_LEN: usize = 2 + 1 + 8;
/// Fernet: version (1) + timestamp (8) + IV (16) + one AES block (16) + HMAC (32).
const MIN_TOKEN_LEN: usize = 1 + 8 + 16 + 16 + 32;
/// Base64 characters that hold the token's version and timestamp (12 -> 9 bytes).
const STAMP_CHARS: usize = 12;
/// How far a sender's clock may run ahead before a token is refused.
const MAX_FUTURE_SKEW_SECS: u64 = 60;

/// Bounds applied when opening.
#[derive(Debug, Clone, Copy)]
pub struct SealLimits {
    /// Largest sealed message accepted, checked before anything is decoded.
    pub max_len: usize,
    /// Oldest token accepted, in seconds: a replayed message older than this is refused.
    pub max_age_secs: u64,
}

/// Why a sealed message was refused. Each cause is its own variant so that the node
/// can count them separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Larger than [`SealLimits::max_len`].
    #[error("message larger than the limit")]
    TooLarge,
    /// Shorter than a header or a minimal token, or cut inside the token.
    #[error("message is truncated")]
    Truncated,
    /// Not a ghmesh envelope or not a Fernet token at all.
    #[error("message is not a sealed ghmesh message")]
    Garbage,
    /// Sealed with another mesh's key (another secret or scope).
    #[error("message sealed for another mesh")]
    WrongKey,
    /// The key id matches but the HMAC does not: modified in transit.
    #[error("message failed its integrity check")]
    Tampered,
    /// The token is older than [`SealLimits::max_age_secs`].
    #[error("message is too old")]
    Expired,
    /// The token claims a time too far in the future.
    #[error("message timestamp is in the future")]
    FromFuture,
    /// Envelope or message schema version this node does not speak.
    #[error("unknown message version")]
    UnknownVersion,
    /// Decrypted fine but the CBOR inside is not a valid message.
    #[error("message content is malformed")]
    Malformed,
}

/// Seals a message for the mesh at time `now_secs` (unix seconds).
pub fn seal(keys: &MeshKeys, msg: &Message, now_secs: u64) -> Vec<u8> {
    let envelope = EnvelopeRef {
        v: MESSAGE_VERSION,
        msg,
    };
    seal_envelope(keys, &envelope, now_secs)
}

/// Room for a message's CBOR: a body is written once into a buffer that fits it,
/// instead of through a vector that doubles (and copies) as it grows.
fn cbor_capacity(msg: &Message) -> usize {
    const OVERHEAD: usize = 1024;
    let body = match msg {
        Message::BodyReply(BodyReply::Found(body)) => Some(body),
        Message::Announce(a) => a.body.as_ref(),
        Message::LookupReply(LookupReply::Found(a)) => a.body.as_ref(),
        _ => None,
    };
    body.map_or(0, |b| b.len()) + OVERHEAD
}

fn seal_envelope(keys: &MeshKeys, envelope: &EnvelopeRef<'_>, now_secs: u64) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(cbor_capacity(envelope.msg));
    // Serialising plain structs into a Vec cannot fail.
    let _ = ciborium::into_writer(envelope, &mut cbor);
    frame(keys, &keys.fernet().encrypt_at_time(&cbor, now_secs))
}

fn frame(keys: &MeshKeys, token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + token.len());
    out.extend_from_slice(MAGIC);
    out.push(ENVELOPE_VERSION);
    out.extend_from_slice(keys.key_id());
    out.extend_from_slice(token.as_bytes());
    out
}

/// Opens a sealed message received at `now_secs`.
pub fn open(
    keys: &MeshKeys,
    data: &[u8],
    limits: SealLimits,
    now_secs: u64,
) -> Result<Message, OpenError> {
    if data.len() > limits.max_len {
        return Err(OpenError::TooLarge);
    }
    if data.len() < HEADER_LEN {
        return Err(OpenError::Truncated);
    }
    if &data[..2] != MAGIC {
        return Err(OpenError::Garbage);
    }
    if data[2] != ENVELOPE_VERSION {
        return Err(OpenError::UnknownVersion);
    }
    if &data[3..HEADER_LEN] != keys.key_id() {
        return Err(OpenError::WrongKey);
    }
    let token = std::str::from_utf8(&data[HEADER_LEN..]).map_err(|_| OpenError::Garbage)?;
    let (stamp, len) = token_stamp(token)?;
    if len < MIN_TOKEN_LEN || !(len - MIN_TOKEN_LEN).is_multiple_of(16) {
        return Err(OpenError::Truncated);
    }
    if stamp[0] != 0x80 {
        return Err(OpenError::Garbage);
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&stamp[1..9]);
    let ts = u64::from_be_bytes(ts);
    if ts > now_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(OpenError::FromFuture);
    }
    if now_secs.saturating_sub(ts) > limits.max_age_secs {
        return Err(OpenError::Expired);
    }
    // Age and skew are checked above against the caller's clock. The crate decodes the
    // whole token itself, so only its first characters were decoded here.
    let plain = keys
        .fernet()
        .decrypt_at_time(token, None, now_secs)
        .map_err(|_| OpenError::Tampered)?;
    decode(&plain)
}

/// The token's version and timestamp bytes, and its decoded length, from its text
/// without decoding all of it: a bad character further on fails the crate's own decode,
/// and the message is then refused as tampered with.
fn token_stamp(token: &str) -> Result<([u8; 9], usize), OpenError> {
    // Padded URL-safe base64 always has a length that is a multiple of 4.
    if !token.len().is_multiple_of(4) {
        return Err(OpenError::Truncated);
    }
    let mut stamp = [0u8; 9];
    // Bytes, not text: a cut inside a multi-byte character must not panic.
    let head = &token.as_bytes()[..token.len().min(STAMP_CHARS)];
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode_slice(head, &mut stamp)
        .map_err(|_| OpenError::Garbage)?;
    if decoded < stamp.len() {
        return Err(OpenError::Truncated);
    }
    let padding = token.bytes().rev().take_while(|c| *c == b'=').count();
    Ok((stamp, token.len() / 4 * 3 - padding))
}

/// Decodes the CBOR inside a seal (what [`open`] does after decrypting). The version is
/// looked at on its own only when the message does not decode: a message of another
/// version is then told apart from garbage. Public for fuzzing: what a key holder can
/// send.
pub fn decode(plain: &[u8]) -> Result<Message, OpenError> {
    match ciborium::from_reader::<Envelope, _>(plain) {
        Ok(envelope) if envelope.v == MESSAGE_VERSION => Ok(envelope.msg),
        Ok(_) => Err(OpenError::UnknownVersion),
        Err(_) => match ciborium::from_reader::<VersionProbe, _>(plain) {
            Ok(probe) if probe.v != MESSAGE_VERSION => Err(OpenError::UnknownVersion),
            _ => Err(OpenError::Malformed),
        },
    }
}

/// Seals an arbitrary envelope version or raw payload: lets tests build messages a
/// correct node would never send.
#[doc(hidden)]
pub fn seal_raw_for_tests(
    keys: &MeshKeys,
    version: u16,
    payload: Option<&[u8]>,
    now_secs: u64,
) -> Vec<u8> {
    match payload {
        Some(bytes) => frame(keys, &keys.fernet().encrypt_at_time(bytes, now_secs)),
        None => seal_envelope(
            keys,
            &EnvelopeRef {
                v: version,
                msg: &Message::LookupReply(crate::wire::LookupReply::NotFound),
            },
            now_secs,
        ),
    }
}
