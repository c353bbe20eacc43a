//! Sealed bodies: request and response bodies encrypted end to end between client and server,
//! so the proxy that terminates TLS sees only ciphertext. HPKE (RFC 9180) to the server's
//! pinned key, in the manner of Oblivious HTTP's encapsulation (RFC 9458 §4.3–4.4), chunked
//! so that bodies of any size stream.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256) `0x0020`, HKDF-SHA256 `0x0001`, ChaCha20-Poly1305
//! `0x0003` (RFC 9180 §7), base mode.
//!
//! ```text
//! request  = hdr ‖ enc ‖ chunk*                      hdr = key_id (1) ‖ kem_id (2) ‖ kdf_id (2) ‖ aead_id (2)
//!            enc, ctx = SetupBaseS(pkR, "ferry sealed request v1" ‖ 0x00 ‖ hdr)
//!            each chunk's ciphertext = ctx.Seal(aad, plaintext)   (nonce: HPKE's own counter)
//! response = response_nonce (32) ‖ chunk*
//!            secret     = ctx.Export("ferry sealed response v1", 32)
//!            prk        = HKDF-Extract(salt = enc ‖ response_nonce, secret)
//!            aead_key   = HKDF-Expand(prk, "key", 32); aead_nonce = HKDF-Expand(prk, "nonce", 12)
//!            chunk i's ciphertext = ChaCha20-Poly1305(aead_key, aead_nonce XOR i (96-bit big-endian), aad, plaintext)
//! chunk    = final (1: 0 or 1) ‖ length (u32 big-endian) ‖ ciphertext (length bytes)
//!            aad = "final" for the last chunk, empty for the others
//! ```
//!
//! As in RFC 9458 the response key comes from the request's HPKE context through its
//! exporter and a fresh server nonce, so only the client that sealed the request can open the
//! response, and one request's response cannot be opened as another's. Chunk plaintexts hold
//! at most [`MAX_SEALED_CHUNK`] bytes. The nonce counter orders the chunks and the `final` AAD
//! marks the last (the construction of chunked Oblivious HTTP): a chunk reordered, dropped,
//! repeated or altered fails to open, a body cut short lacks its final chunk, and a chunk
//! claiming to be final or not differently from how it was sealed fails too.
//!
//! Sealing hides content, not who asks: the signatures ([`super::signing`]) still
//! authenticate the request, and cover the sealed bytes as they travel.

use chacha20poly1305::ChaCha20Poly1305 as ResponseAead;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use hpke::aead::{AeadCtxR, AeadCtxS, ChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

type Kem = X25519HkdfSha256;
type KemPrivate = <Kem as hpke::Kem>::PrivateKey;
type KemPublic = <Kem as hpke::Kem>::PublicKey;
type Encapped = <Kem as hpke::Kem>::EncappedKey;

/// RFC 9180 §7.1: DHKEM(X25519, HKDF-SHA256).
pub const KEM_ID: u16 = 0x0020;
/// RFC 9180 §7.2: HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// RFC 9180 §7.3: ChaCha20-Poly1305.
pub const AEAD_ID: u16 = 0x0003;
/// Bytes of the request header: `hdr` and `enc`.
pub const REQUEST_HEADER_LEN: usize = 7 + 32;
/// Bytes of the response nonce that opens a sealed response (max(Nn, Nk), RFC 9458 §4.4).
pub const RESPONSE_NONCE_LEN: usize = 32;
/// Most plaintext bytes in one chunk.
pub const MAX_SEALED_CHUNK: usize = 1 << 20;
/// Bytes before a chunk's ciphertext: the final flag and the length.
pub const CHUNK_HEADER_LEN: usize = 1 + 4;
/// The content type of a sealed body (a signed header, docs/HTTP.md §2 and §8): a request
/// with it asks for sealing, a response with it is sealed.
pub const SEALED_CONTENT_TYPE: &str = "application/ferry-sealed";
/// The ID of the key [`server_key`] derives.
pub const SERVER_KEY_ID: u8 = 1;
const SERVER_KEY_INFO: &[u8] = b"ferry http seal v1";

const TAG_LEN: usize = 16;
const REQUEST_INFO: &[u8] = b"ferry sealed request v1\0";
const RESPONSE_LABEL: &[u8] = b"ferry sealed response v1";
const FINAL_AAD: &[u8] = b"final";

/// Why a sealed body could not be made or opened. Opening failures carry no detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The bytes do not open: wrong key, altered, reordered, truncated or malformed.
    #[error("sealed body does not open")]
    Open,
    /// The request names another key (its `key_id` or suite is not this server's).
    #[error("sealed body is for another key")]
    UnknownKey,
    /// Sealing failed (only after 2^64 chunks).
    #[error("cannot seal")]
    Seal,
}

/// The server's HPKE key pair. The private key zeroizes on drop and prints as
/// `SealKeyPair(..)`.
pub struct SealKeyPair {
    private: KemPrivate,
    public: SealPublicKey,
}

impl core::fmt::Debug for SealKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SealKeyPair(..)")
    }
}

impl SealKeyPair {
    /// Derives the key pair from a 32-byte secret seed (RFC 9180 §7.1.3 `DeriveKeyPair`), so
    /// the server keeps only the seed.
    pub fn derive(key_id: u8, seed: &[u8; 32]) -> Self {
        let (private, public) = Kem::derive_keypair(seed);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: SealPublicKey { key_id, bytes },
        }
    }

    /// The public key clients pin.
    pub fn public_key(&self) -> SealPublicKey {
        self.public
    }
}

/// The server's key pair, derived from its master key: the seed of `DeriveKeyPair` is
/// HKDF-SHA256(master, "ferry http seal v1"), the key ID [`SERVER_KEY_ID`]. So the server
/// keeps no other secret, and a new master key is a new sealing key.
pub fn server_key(master: &crate::secret::MasterKey) -> SealKeyPair {
    let mut seed = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit.
    let _ =
        Hkdf::<Sha256>::new(None, master.expose_secret()).expand(SERVER_KEY_INFO, seed.as_mut());
    SealKeyPair::derive(SERVER_KEY_ID, &seed)
}

/// The server's HPKE public key and its one-byte ID, as credentials pin it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealPublicKey {
    key_id: u8,
    bytes: [u8; 32],
}

impl SealPublicKey {
    /// A key ID and the 32 bytes of an X25519 public key.
    pub fn from_bytes(key_id: u8, bytes: [u8; 32]) -> Self {
        Self { key_id, bytes }
    }

    /// The key's ID.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The public key's bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.bytes
    }

    /// Text form: the key ID and the key in lowercase hex, `ID:HEX` (as a credential file
    /// records it).
    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.key_id,
            data_encoding::HEXLOWER.encode(&self.bytes)
        )
    }

    /// Parses [`SealPublicKey::to_text`]'s form.
    pub fn parse(text: &str) -> Option<Self> {
        let (id, hex) = text.split_once(':')?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .ok()?;
        Some(Self {
            key_id: id.parse().ok()?,
            bytes: bytes.try_into().ok()?,
        })
    }

    fn header(&self) -> [u8; 7] {
        let mut h = [0u8; 7];
        h[0] = self.key_id;
        h[1..3].copy_from_slice(&KEM_ID.to_be_bytes());
        h[3..5].copy_from_slice(&KDF_ID.to_be_bytes());
        h[5..7].copy_from_slice(&AEAD_ID.to_be_bytes());
        h
    }
}

fn request_info(header: &[u8; 7]) -> Vec<u8> {
    [REQUEST_INFO, header].concat()
}

/// The secret a request's context exports for its response, and the request's `enc`.
#[derive(Clone)]
struct ResponseSecret {
    secret: Zeroizing<[u8; 32]>,
    enc: [u8; 32],
}

impl ResponseSecret {
    fn export<C>(export: C, enc: [u8; 32]) -> Result<Self, SealError>
    where
        C: FnOnce(&[u8], &mut [u8]) -> Result<(), hpke::HpkeError>,
    {
        let mut secret = Zeroizing::new([0u8; 32]);
        export(RESPONSE_LABEL, secret.as_mut()).map_err(|_| SealError::Seal)?;
        Ok(Self { secret, enc })
    }

    /// RFC 9458 §4.4: the response's AEAD key and nonce.
    fn keys(&self, response_nonce: &[u8; RESPONSE_NONCE_LEN]) -> ResponseKeys {
        let salt = [&self.enc[..], &response_nonce[..]].concat();
        let hk = Hkdf::<Sha256>::new(Some(&salt), self.secret.as_ref());
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        // 32 and 12 bytes are far below HKDF-SHA256's limit.
        let _ = hk.expand(b"key", key.as_mut());
        let _ = hk.expand(b"nonce", &mut nonce);
        let aead = ResponseAead::new_from_slice(key.as_ref())
            .unwrap_or_else(|_| unreachable!("a 32-byte key"));
        ResponseKeys {
            aead,
            nonce,
            counter: 0,
        }
    }
}

struct ResponseKeys {
    aead: ResponseAead,
    nonce: [u8; 12],
    counter: u64,
}

impl ResponseKeys {
    fn next_nonce(&mut self) -> Result<[u8; 12], SealError> {
        let mut n = self.nonce;
        for (b, c) in n[4..].iter_mut().zip(self.counter.to_be_bytes()) {
            *b ^= c;
        }
        self.counter = self.counter.checked_add(1).ok_or(SealError::Seal)?;
        Ok(n)
    }
}

impl Drop for ResponseKeys {
    fn drop(&mut self) {
        self.nonce.zeroize();
    }
}

fn aad(is_final: bool) -> &'static [u8] {
    if is_final { FINAL_AAD } else { b"" }
}

fn write_chunk(is_final: bool, ciphertext: &[u8], out: &mut Vec<u8>) {
    out.push(u8::from(is_final));
    // At most MAX_SEALED_CHUNK + 16 bytes, which fits a u32.
    let len = u32::try_from(ciphertext.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(ciphertext);
}

/// A chunk split off the input: whether it is final, its ciphertext, bytes used.
type RawChunk<'a> = (bool, &'a [u8], usize);

/// Splits the chunk at the start of `input`; `Ok(None)` if incomplete.
fn read_chunk(input: &[u8]) -> Result<Option<RawChunk<'_>>, SealError> {
    let Some(header) = input.get(..CHUNK_HEADER_LEN) else {
        return Ok(None);
    };
    let is_final = match header[0] {
        0 => false,
        1 => true,
        _ => return Err(SealError::Open),
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[1..]);
    let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| SealError::Open)?;
    if !(TAG_LEN..=MAX_SEALED_CHUNK + TAG_LEN).contains(&len) {
        return Err(SealError::Open);
    }
    let Some(ct) = input.get(CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + len) else {
        return Ok(None);
    };
    Ok(Some((is_final, ct, CHUNK_HEADER_LEN + len)))
}

/// What one step of opening gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsealed {
    /// The request header or the response nonce was read: no data yet.
    Start,
    /// Plaintext of one chunk, in order (possibly empty for the final chunk).
    Data(Vec<u8>),
    /// The final chunk opened (its plaintext, possibly empty): the body is complete.
    End(Vec<u8>),
}

/// The client's end of a sealed request.
pub struct RequestSealer {
    ctx: AeadCtxS<ChaCha20Poly1305, HkdfSha256, Kem>,
    response: ResponseSecret,
}

impl core::fmt::Debug for RequestSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RequestSealer(..)")
    }
}

impl RequestSealer {
    /// Starts a sealed request to the pinned key `server`, appending its header to `out`.
    pub fn new(
        server: &SealPublicKey,
        rng: &mut impl rand_core_10::CryptoRng,
        out: &mut Vec<u8>,
    ) -> Result<Self, SealError> {
        let pk = KemPublic::from_bytes(&server.bytes).map_err(|_| SealError::Seal)?;
        let header = server.header();
        let (enc, ctx) = hpke::setup_sender_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &pk,
            &request_info(&header),
            rng,
        )
        .map_err(|_| SealError::Seal)?;
        let mut enc_bytes = [0u8; 32];
        enc_bytes.copy_from_slice(&enc.to_bytes());
        let response = ResponseSecret::export(|l, o| ctx.export(l, o), enc_bytes)?;
        out.extend_from_slice(&header);
        out.extend_from_slice(&enc_bytes);
        Ok(Self { ctx, response })
    }

    /// Appends `data` as sealed chunks of at most [`MAX_SEALED_CHUNK`] bytes.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        for piece in data.chunks(MAX_SEALED_CHUNK) {
            let ct = self
                .ctx
                .seal(piece, aad(false))
                .map_err(|_| SealError::Seal)?;
            write_chunk(false, &ct, out);
        }
        Ok(())
    }

    /// Appends the final chunk (holding `last`, at most [`MAX_SEALED_CHUNK`] bytes; more is
    /// pushed first) and returns what opens the response.
    pub fn finish(mut self, last: &[u8], out: &mut Vec<u8>) -> Result<ResponseOpener, SealError> {
        let split = last.len().saturating_sub(MAX_SEALED_CHUNK);
        let (before, last) = last.split_at(split);
        self.push(before, out)?;
        let ct = self
            .ctx
            .seal(last, aad(true))
            .map_err(|_| SealError::Seal)?;
        write_chunk(true, &ct, out);
        Ok(ResponseOpener {
            secret: self.response,
            keys: None,
            state: State::Open,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Finished,
    Failed,
}

impl State {
    /// Whether an opener in this state goes on with `input`: `Ok(false)` once finished with
    /// nothing more; an error once failed, or for any byte after the final chunk.
    fn admits(self, input: &[u8]) -> Result<bool, SealError> {
        match self {
            State::Failed => Err(SealError::Open),
            State::Finished if input.is_empty() => Ok(false),
            State::Finished => Err(SealError::Open),
            State::Open => Ok(true),
        }
    }

    /// `r`, remembering a failure: every later call fails too.
    fn sticky<T>(&mut self, r: Result<T, SealError>) -> Result<T, SealError> {
        if r.is_err() {
            *self = State::Failed;
        }
        r
    }
}

/// The server's end of a sealed request: opens its chunks in order.
pub struct RequestOpener<'k> {
    key: &'k SealKeyPair,
    ctx: Option<(AeadCtxR<ChaCha20Poly1305, HkdfSha256, Kem>, ResponseSecret)>,
    state: State,
}

impl core::fmt::Debug for RequestOpener<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RequestOpener(..)")
    }
}

impl<'k> RequestOpener<'k> {
    /// An opener for requests sealed to `key`.
    pub fn new(key: &'k SealKeyPair) -> Self {
        Self {
            key,
            ctx: None,
            state: State::Open,
        }
    }

    /// Opens what starts `input`: the header first, then one chunk per call.
    /// `Ok(Some((what, used)))` consumed `used` bytes; `Ok(None)` needs more. Any error, or
    /// any byte after the final chunk, fails this and every later call.
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<(Unsealed, usize)>, SealError> {
        let r = self.step(input);
        self.state.sticky(r)
    }

    fn step(&mut self, input: &[u8]) -> Result<Option<(Unsealed, usize)>, SealError> {
        if !self.state.admits(input)? {
            return Ok(None);
        }
        let Some((ctx, _)) = &mut self.ctx else {
            let Some(head) = input.get(..REQUEST_HEADER_LEN) else {
                return Ok(None);
            };
            let expected = self.key.public.header();
            if head[..7] != expected {
                return Err(SealError::UnknownKey);
            }
            let mut enc = [0u8; 32];
            enc.copy_from_slice(&head[7..]);
            let encapped = Encapped::from_bytes(&enc).map_err(|_| SealError::Open)?;
            let ctx = hpke::setup_receiver::<ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Base,
                &self.key.private,
                &encapped,
                &request_info(&expected),
            )
            .map_err(|_| SealError::Open)?;
            let secret = ResponseSecret::export(|l, o| ctx.export(l, o), enc)?;
            self.ctx = Some((ctx, secret));
            return Ok(Some((Unsealed::Start, REQUEST_HEADER_LEN)));
        };
        let Some((is_final, ct, used)) = read_chunk(input)? else {
            return Ok(None);
        };
        let plain = ctx.open(ct, aad(is_final)).map_err(|_| SealError::Open)?;
        if is_final {
            self.state = State::Finished;
            return Ok(Some((Unsealed::End(plain), used)));
        }
        Ok(Some((Unsealed::Data(plain), used)))
    }

    /// Whether the final chunk opened. At the end of input, false means the body was cut
    /// short and must be discarded.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Starts the sealed response, appending its nonce to `out`. Only once the whole request
    /// opened ([`RequestOpener::is_finished`]).
    pub fn response_sealer(
        &self,
        rng: &mut impl rand_core_10::CryptoRng,
        out: &mut Vec<u8>,
    ) -> Result<ResponseSealer, SealError> {
        let (Some((_, secret)), State::Finished) = (&self.ctx, self.state) else {
            return Err(SealError::Seal);
        };
        let mut nonce = [0u8; RESPONSE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        Ok(ResponseSealer {
            keys: secret.keys(&nonce),
        })
    }
}

/// The server's end of a sealed response.
pub struct ResponseSealer {
    keys: ResponseKeys,
}

impl core::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ResponseSealer(..)")
    }
}

impl ResponseSealer {
    fn one(&mut self, is_final: bool, data: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let nonce = self.keys.next_nonce()?;
        let ct = self
            .keys
            .aead
            .encrypt(
                &chacha20poly1305::Nonce::from(nonce),
                Payload {
                    msg: data,
                    aad: aad(is_final),
                },
            )
            .map_err(|_| SealError::Seal)?;
        write_chunk(is_final, &ct, out);
        Ok(())
    }

    /// Appends `data` as sealed chunks of at most [`MAX_SEALED_CHUNK`] bytes.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        for piece in data.chunks(MAX_SEALED_CHUNK) {
            self.one(false, piece, out)?;
        }
        Ok(())
    }

    /// Appends the final chunk, holding `last` (more than [`MAX_SEALED_CHUNK`] bytes are
    /// pushed first).
    pub fn finish(mut self, last: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let split = last.len().saturating_sub(MAX_SEALED_CHUNK);
        let (before, last) = last.split_at(split);
        self.push(before, out)?;
        self.one(true, last, out)
    }
}

impl ResponseSealer {
    /// A sealer under a given exported secret, `enc` and nonce (the fuzz target's seeds).
    pub(crate) fn from_parts(secret: [u8; 32], enc: [u8; 32], nonce: &[u8; 32]) -> Self {
        let secret = ResponseSecret {
            secret: Zeroizing::new(secret),
            enc,
        };
        Self {
            keys: secret.keys(nonce),
        }
    }
}

/// The client's end of a sealed response: opens its chunks in order.
pub struct ResponseOpener {
    secret: ResponseSecret,
    keys: Option<ResponseKeys>,
    state: State,
}

impl core::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ResponseOpener(..)")
    }
}

impl ResponseOpener {
    /// Opens what starts `input`: the response nonce first, then one chunk per call, as
    /// [`RequestOpener::decode`].
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<(Unsealed, usize)>, SealError> {
        let r = self.step(input);
        self.state.sticky(r)
    }

    fn step(&mut self, input: &[u8]) -> Result<Option<(Unsealed, usize)>, SealError> {
        if !self.state.admits(input)? {
            return Ok(None);
        }
        let Some(keys) = &mut self.keys else {
            let Some(nonce) = input.get(..RESPONSE_NONCE_LEN) else {
                return Ok(None);
            };
            let mut n = [0u8; RESPONSE_NONCE_LEN];
            n.copy_from_slice(nonce);
            self.keys = Some(self.secret.keys(&n));
            return Ok(Some((Unsealed::Start, RESPONSE_NONCE_LEN)));
        };
        let Some((is_final, ct, used)) = read_chunk(input)? else {
            return Ok(None);
        };
        let nonce = keys.next_nonce().map_err(|_| SealError::Open)?;
        let plain = keys
            .aead
            .decrypt(
                &chacha20poly1305::Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: aad(is_final),
                },
            )
            .map_err(|_| SealError::Open)?;
        if is_final {
            self.state = State::Finished;
            return Ok(Some((Unsealed::End(plain), used)));
        }
        Ok(Some((Unsealed::Data(plain), used)))
    }

    /// Whether the final chunk opened.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// An opener under a given exported secret and `enc` (the fuzz target).
    pub(crate) fn from_parts(secret: [u8; 32], enc: [u8; 32]) -> Self {
        Self {
            secret: ResponseSecret {
                secret: Zeroizing::new(secret),
                enc,
            },
            keys: None,
            state: State::Open,
        }
    }

    /// A new opener for the same request's response (tests open one response many ways).
    #[cfg(test)]
    fn fresh(&self) -> Self {
        Self {
            secret: self.secret.clone(),
            keys: None,
            state: State::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> impl rand_core_10::CryptoRng {
        rand_core_10::UnwrapErr(getrandom_04::SysRng)
    }

    /// Opens a whole body with `decode`; the plaintext, or the first error, or `None` if the
    /// body ended without its final chunk.
    fn open_all(
        mut decode: impl FnMut(&[u8]) -> Result<Option<(Unsealed, usize)>, SealError>,
        mut input: &[u8],
    ) -> Result<Option<Vec<u8>>, SealError> {
        let mut out = Vec::new();
        // Each step consumes at least a header.
        while let Some((u, used)) = decode(input)? {
            input = &input[used..];
            match u {
                Unsealed::Start => {}
                Unsealed::Data(d) => out.extend_from_slice(&d),
                Unsealed::End(d) => {
                    out.extend_from_slice(&d);
                    if !input.is_empty() {
                        decode(input)?;
                    }
                    return Ok(Some(out));
                }
            }
        }
        Ok(None)
    }

    fn sealed_request(
        key: &SealKeyPair,
        parts: &[&[u8]],
        last: &[u8],
    ) -> (Vec<u8>, Vec<usize>, ResponseOpener) {
        let mut out = Vec::new();
        let mut s = RequestSealer::new(&key.public_key(), &mut rng(), &mut out).unwrap();
        let mut starts = vec![out.len()];
        for p in parts {
            s.push(p, &mut out).unwrap();
            starts.push(out.len());
        }
        let opener = s.finish(last, &mut out).unwrap();
        starts.push(out.len());
        (out, starts, opener)
    }

    fn key() -> SealKeyPair {
        SealKeyPair::derive(1, &[42; 32])
    }

    #[test]
    fn request_and_response_round_trip() {
        let k = key();
        let (req, _, mut response_opener) = sealed_request(&k, &[b"hello ", b"sealed"], b" world");
        assert!(!req.windows(6).any(|w| w == b"sealed"), "plaintext visible");
        let mut opener = RequestOpener::new(&k);
        let got = open_all(|i| opener.decode(i), &req).unwrap();
        assert_eq!(got.as_deref(), Some(&b"hello sealed world"[..]));
        assert!(opener.is_finished());

        let mut resp = Vec::new();
        let mut rs = opener.response_sealer(&mut rng(), &mut resp).unwrap();
        rs.push(b"the answer", &mut resp).unwrap();
        rs.finish(b"", &mut resp).unwrap();
        assert!(!resp.windows(6).any(|w| w == b"answer"));
        let got = open_all(|i| response_opener.decode(i), &resp).unwrap();
        assert_eq!(got.as_deref(), Some(&b"the answer"[..]));
        assert!(response_opener.is_finished());
    }

    #[test]
    fn large_bodies_stream_in_bounded_chunks() {
        let k = key();
        let data = vec![7u8; 2 * MAX_SEALED_CHUNK + 5];
        let (req, _, _) = sealed_request(&k, &[&data], &data);
        let mut opener = RequestOpener::new(&k);
        let mut rest = &req[..];
        let mut total = 0;
        while let Some((u, used)) = opener.decode(rest).unwrap() {
            rest = &rest[used..];
            match u {
                Unsealed::Start => {}
                Unsealed::Data(d) => {
                    assert!(d.len() <= MAX_SEALED_CHUNK);
                    total += d.len();
                }
                Unsealed::End(d) => {
                    assert!(d.len() <= MAX_SEALED_CHUNK);
                    total += d.len();
                    break;
                }
            }
        }
        assert_eq!(total, 2 * data.len());
        assert!(rest.is_empty() && opener.is_finished());
    }

    #[test]
    fn truncation_reorder_and_tamper_fail() {
        let k = key();
        let (req, starts, _) = sealed_request(&k, &[b"one", b"two", b"three"], b"end");
        // Cut anywhere: never complete.
        for cut in 0..req.len() {
            let mut o = RequestOpener::new(&k);
            let r = open_all(|i| o.decode(i), &req[..cut]);
            assert!(matches!(r, Ok(None) | Err(_)), "cut at {cut}: {r:?}");
            assert!(!o.is_finished());
        }
        // Swapped, dropped, repeated chunks.
        let chunk = |i: usize| &req[starts[i]..starts[i + 1]];
        let head = &req[..starts[0]];
        let bodies = [
            [head, chunk(1), chunk(0), chunk(2), chunk(3)].concat(),
            [head, chunk(0), chunk(2), chunk(3)].concat(),
            [head, chunk(0), chunk(0), chunk(1), chunk(2), chunk(3)].concat(),
            [head, chunk(0), chunk(1), chunk(2)].concat(),
        ];
        for b in &bodies {
            let mut o = RequestOpener::new(&k);
            assert!(!matches!(open_all(|i| o.decode(i), b), Ok(Some(_))));
        }
        // The final flag flipped on the last chunk, or set on an earlier one.
        for at in [starts[3], starts[0]] {
            let mut t = req.clone();
            t[at] ^= 1;
            let mut o = RequestOpener::new(&k);
            assert_eq!(open_all(|i| o.decode(i), &t), Err(SealError::Open));
        }
        // Any byte flipped.
        for i in 0..req.len() {
            let mut t = req.clone();
            t[i] ^= 0x01;
            let mut o = RequestOpener::new(&k);
            assert!(
                !matches!(open_all(|i| o.decode(i), &t), Ok(Some(_))),
                "flip at {i}"
            );
        }
        // Bytes after the end.
        let mut o = RequestOpener::new(&k);
        let extra = [&req[..], &[0]].concat();
        assert_eq!(open_all(|i| o.decode(i), &extra), Err(SealError::Open));
        // Another server key, or another key ID.
        let other_key = SealKeyPair::derive(1, &[43; 32]);
        let mut o = RequestOpener::new(&other_key);
        assert_eq!(open_all(|i| o.decode(i), &req), Err(SealError::Open));
        let other_id = SealKeyPair::derive(2, &[42; 32]);
        let mut o = RequestOpener::new(&other_id);
        assert_eq!(open_all(|i| o.decode(i), &req), Err(SealError::UnknownKey));
    }

    /// A sealed response to request `a`: its chunks and where each starts.
    fn sealed_response(k: &SealKeyPair) -> (ResponseOpener, ResponseOpener, Vec<u8>, Vec<usize>) {
        let (req_a, _, opener_a) = sealed_request(k, &[], b"a");
        let (_, _, opener_b) = sealed_request(k, &[], b"b");
        let mut o = RequestOpener::new(k);
        // A response sealer needs the whole request first.
        assert_eq!(
            o.response_sealer(&mut rng(), &mut Vec::new()).err(),
            Some(SealError::Seal)
        );
        open_all(|i| o.decode(i), &req_a).unwrap().unwrap();
        let mut resp = Vec::new();
        let mut rs = o.response_sealer(&mut rng(), &mut resp).unwrap();
        let mut starts = vec![resp.len()];
        for d in [&b"one"[..], b"two"] {
            rs.push(d, &mut resp).unwrap();
            starts.push(resp.len());
        }
        rs.finish(b"end", &mut resp).unwrap();
        starts.push(resp.len());
        (opener_a, opener_b, resp, starts)
    }

    #[test]
    fn a_response_opens_only_for_its_request() {
        let k = key();
        let (opener_a, mut opener_b, resp, _) = sealed_response(&k);
        assert_eq!(
            open_all(|i| opener_b.decode(i), &resp),
            Err(SealError::Open)
        );
        let mut a = opener_a.fresh();
        assert_eq!(
            open_all(|i| a.decode(i), &resp).unwrap().as_deref(),
            Some(&b"onetwoend"[..])
        );
    }

    #[test]
    fn response_truncation_reorder_and_tamper_fail() {
        let k = key();
        let (opener, _, resp, starts) = sealed_response(&k);
        for cut in 0..resp.len() {
            let mut o = opener.fresh();
            let r = open_all(|i| o.decode(i), &resp[..cut]);
            assert!(matches!(r, Ok(None) | Err(_)), "cut at {cut}: {r:?}");
        }
        let chunk = |i: usize| &resp[starts[i]..starts[i + 1]];
        let head = &resp[..starts[0]];
        let bad = [
            [head, chunk(1), chunk(0), chunk(2)].concat(),
            [head, chunk(0), chunk(2)].concat(),
            [head, chunk(0), chunk(0), chunk(1), chunk(2)].concat(),
            [head, chunk(0), chunk(1)].concat(),
        ];
        for b in &bad {
            let mut o = opener.fresh();
            assert!(!matches!(open_all(|i| o.decode(i), b), Ok(Some(_))));
        }
        for i in 0..resp.len() {
            let mut t = resp.clone();
            t[i] ^= 0x01;
            let mut o = opener.fresh();
            assert!(
                !matches!(open_all(|i| o.decode(i), &t), Ok(Some(_))),
                "flip at {i}"
            );
        }
        // The untouched response still opens.
        let mut o = opener.fresh();
        assert!(matches!(open_all(|i| o.decode(i), &resp), Ok(Some(_))));
    }

    #[test]
    fn debug_hides_keys() {
        let k = key();
        assert_eq!(format!("{k:?}"), "SealKeyPair(..)");
        let mut out = Vec::new();
        let s = RequestSealer::new(&k.public_key(), &mut rng(), &mut out).unwrap();
        assert_eq!(format!("{s:?}"), "RequestSealer(..)");
        assert_eq!(format!("{:?}", RequestOpener::new(&k)), "RequestOpener(..)");
    }
}
