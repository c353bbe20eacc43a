//! The worked example of docs/HTTP.md §9, recomputed: every intermediate value must equal
//! the constant here, and every constant must appear in the document, so the two cannot drift.

use super::chunks::Chunk;
use super::*;
use crate::claims::Claims;
use crate::psk;
use crate::secret::MasterKey;

const DOC: &str = include_str!("../../../../docs/HTTP.md");

const CLAIMS_HEX: &str =
    "846f66657272792d636c61696d732d763165616c69636501818264726f6c6566777269746572";
const CLAIMS_B64: &str = "hG9mZXJyeS1jbGFpbXMtdjFlYWxpY2UBgYJkcm9sZWZ3cml0ZXI";
const PSK: &str = "ee904f6d669e377a9dc580470ba7c2bb271125a8724f6581bae92a57ba27ed9a";
const DATE: &str = "20261118";
const K_DATE: &str = "6e78f1801c146312e43bd380f0615a673aaead0a4789551817a050d5c8e7fb30";
const K_REQUEST: &str = "315dbf0db2db463f4e1b33b8a2313abb28947ca8d86e92bc99493fdf3b27799a";
const K_RESPONSE: &str = "bf874b4afd7df6794568dd37892b6913ac5662e5ec21ac3ebb3e8b7826931681";
const CANONICAL: &str = "PUT
/v1/sources/reports/2026/q3%20final.csv
if-version=3&overwrite=true
content-type:application/octet-stream
range:
claims:6da85c6912f358a74018fe2d98a2f4828f191e51a4200ba894b0b47818c2b886
timestamp:1795000000
nonce:a0a1a2a3a4a5a6a7a8a9aaabacadaeaf
f27c2cf6a103e25dd6c60b8bac57b7ca056e1b2eb910ff3e1af72d773fecc146";
const STRING_TO_SIGN: &str = "FERRY1-HMAC-SHA256
20261118/request
b23e72f87886eac00a0ca1bd6973012b775ed05c4158f9e939f4f98811462c05";
const SIGNATURE: &str = "c4b68c49ff27583261db0e605f87188066d1f9bd52c7c583536cb847c680bb8c";
const AUTHORIZATION: &str = "FERRY1-HMAC-SHA256 Claims=hG9mZXJyeS1jbGFpbXMtdjFlYWxpY2UBgYJkcm9sZWZ3cml0ZXI, Timestamp=1795000000, Nonce=a0a1a2a3a4a5a6a7a8a9aaabacadaeaf, Signature=c4b68c49ff27583261db0e605f87188066d1f9bd52c7c583536cb847c680bb8c";
const BODY_HASH: &str = "f27c2cf6a103e25dd6c60b8bac57b7ca056e1b2eb910ff3e1af72d773fecc146";
const CANONICAL_RESPONSE: &str = "201
content-range:
content-type:
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const RESPONSE_STRING: &str = "FERRY1-HMAC-SHA256
20261118/response
c4b68c49ff27583261db0e605f87188066d1f9bd52c7c583536cb847c680bb8c
5029a2ca442f24f692e6171fb461936ea3390727bec656d21a863fba347bc0e2";
const RESPONSE_SIGNATURE: &str = "8efa388ea76af3dd16926b3ca5a5a16a156cdbe7c8ad95d6ad7723c9bb9a5425";
const STREAM_CANONICAL_HASH: &str =
    "faa6a7d8bd32af62e3e0921ba2db683b95729ea0c28d744fcb5fc0afd6b5479d";
const STREAM_SIGNATURE: &str = "13c1a05d67cbe645acc30828476bc36ac5e722881818205e0efa3a5f7d3da2e7";
const CHUNK_SIGNATURES: [&str; 3] = [
    "1dbcf73e0572e3c5daf7604fbf6670fa7c2121a5588f45d6581592af3b6304cb",
    "4cae7f3ae2479dcb02b6e251fc2504b710107753fe87f6cc124e6e91812e67a2",
    "417fc4de26614edb3b54faf82f02ad84d02606b443903678536861bf8cd7e067",
];
const WIRE: [&str; 3] = [
    "000000071dbcf73e0572e3c5daf7604fbf6670fa7c2121a5588f45d6581592af3b6304cb68656c6c6f2c20",
    "000000064cae7f3ae2479dcb02b6e251fc2504b710107753fe87f6cc124e6e91812e67a266657272790a",
    "00000000417fc4de26614edb3b54faf82f02ad84d02606b443903678536861bf8cd7e067",
];

const TIMESTAMP: u64 = 1_795_000_000;

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn inputs() -> (MasterKey, Claims, Nonce, RequestParts) {
    let master = MasterKey::from_bytes(core::array::from_fn(|i| i as u8));
    let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
    let nonce = Nonce::from_bytes(core::array::from_fn(|i| 0xa0 + i as u8));
    let parts = RequestParts::new(
        "PUT",
        "/v1/sources/reports/2026/q3%20final.csv",
        "overwrite=true&if-version=3",
        BodyHash::of(b"hello, ferry\n"),
    )
    .content_type("application/octet-stream");
    (master, claims, nonce, parts)
}

#[test]
fn every_constant_is_in_the_document() {
    let mut all = vec![
        CLAIMS_HEX,
        CLAIMS_B64,
        PSK,
        DATE,
        K_DATE,
        K_REQUEST,
        K_RESPONSE,
        CANONICAL,
        STRING_TO_SIGN,
        SIGNATURE,
        AUTHORIZATION,
        BODY_HASH,
        CANONICAL_RESPONSE,
        RESPONSE_STRING,
        RESPONSE_SIGNATURE,
        STREAM_CANONICAL_HASH,
        STREAM_SIGNATURE,
    ];
    all.extend(CHUNK_SIGNATURES);
    all.extend(WIRE);
    for c in all {
        assert!(DOC.contains(c), "docs/HTTP.md lacks {c:?}");
    }
}

#[test]
fn request_intermediates() {
    let (master, claims, nonce, parts) = inputs();
    assert_eq!(hex(&claims.encode()), CLAIMS_HEX);
    let psk = psk::derive_psk(&master, &claims);
    assert_eq!(hex(psk.expose_secret()), PSK);
    let date = signing::date(TIMESTAMP).unwrap();
    assert_eq!(date, DATE);
    assert_eq!(
        hex(signing::date_key(&psk, &date).expose_for_test()),
        K_DATE
    );
    let keys = signing::DayKeys::derive(&psk, date);
    assert_eq!(hex(keys.request.expose_for_test()), K_REQUEST);
    assert_eq!(hex(keys.response.expose_for_test()), K_RESPONSE);
    let canonical = parts
        .canonical(&claims.encode(), TIMESTAMP, &nonce)
        .unwrap();
    assert_eq!(canonical, CANONICAL);
    let sts = keys.request_string(&canonical);
    assert_eq!(sts, STRING_TO_SIGN);
    assert_eq!(keys.request.mac(&[sts.as_bytes()]).to_hex(), SIGNATURE);
    assert_eq!(parts.body().to_header(), BODY_HASH);

    // The public calls give the same result, and the server accepts it.
    let signed = RequestSigner::new(claims, psk)
        .sign(&parts, TIMESTAMP, nonce)
        .unwrap();
    assert_eq!(signed.authorization(), AUTHORIZATION);
    assert_eq!(signed.signature().to_hex(), SIGNATURE);
    let mut cache = ReplayCache::new(ReplayConfig::default());
    let verified = verify_request(
        &master,
        AUTHORIZATION,
        &parts,
        TIMESTAMP,
        &mut cache,
        |_| true,
    )
    .unwrap();
    assert_eq!(verified.claims().name(), "alice");

    // The response.
    let response = ResponseParts::new(201, BodyHash::of(b""));
    assert_eq!(response.canonical().unwrap(), CANONICAL_RESPONSE);
    let rsts = keys.response_string(signed.signature(), CANONICAL_RESPONSE);
    assert_eq!(rsts, RESPONSE_STRING);
    assert_eq!(
        keys.response.mac(&[rsts.as_bytes()]).to_hex(),
        RESPONSE_SIGNATURE
    );
    assert_eq!(
        verified.sign_response(&response).unwrap().to_hex(),
        RESPONSE_SIGNATURE
    );
    assert!(
        signed
            .verify_response(&response, RESPONSE_SIGNATURE)
            .is_ok()
    );
}

#[test]
fn streamed_intermediates() {
    let (master, claims, nonce, parts) = inputs();
    let streamed = RequestParts::new(
        "PUT",
        "/v1/sources/reports/2026/q3%20final.csv",
        "overwrite=true&if-version=3",
        BodyHash::Streaming,
    )
    .content_type("application/octet-stream");
    let canonical = streamed
        .canonical(&claims.encode(), TIMESTAMP, &nonce)
        .unwrap();
    assert_eq!(
        canonical,
        CANONICAL.replace(BODY_HASH, canonical::STREAMING_PAYLOAD)
    );
    assert_eq!(
        signing::hex_sha256(canonical.as_bytes()),
        STREAM_CANONICAL_HASH
    );
    let psk = psk::derive_psk(&master, &claims);
    let signed = RequestSigner::new(claims, psk)
        .sign(&streamed, TIMESTAMP, nonce)
        .unwrap();
    assert_eq!(signed.signature().to_hex(), STREAM_SIGNATURE);
    assert_ne!(parts, streamed);

    let mut body = Vec::new();
    let mut signer = signed.body_signer();
    let mut pieces = Vec::new();
    for data in [&b"hello, "[..], b"ferry\n"] {
        let start = body.len();
        signer.push(data, &mut body);
        pieces.push(hex(&body[start..]));
    }
    let start = body.len();
    signer.finish(&mut body);
    pieces.push(hex(&body[start..]));
    assert_eq!(pieces, WIRE);
    for (piece, sig) in pieces.iter().zip(CHUNK_SIGNATURES) {
        assert_eq!(&piece[8..72], sig);
    }

    // The server verifies the chain.
    let mut cache = ReplayCache::new(ReplayConfig::default());
    let verified = verify_request(
        &master,
        signed.authorization(),
        &streamed,
        TIMESTAMP,
        &mut cache,
        |_| true,
    )
    .unwrap();
    let mut v = verified.body_verifier();
    let mut rest = &body[..];
    let mut got = Vec::new();
    while let Some((chunk, used)) = v.decode(rest).unwrap() {
        if let Chunk::Data(d) = chunk {
            got.extend_from_slice(d);
        }
        rest = &rest[used..];
        if rest.is_empty() {
            break;
        }
    }
    assert!(v.is_finished());
    assert_eq!(got, b"hello, ferry\n");
}
