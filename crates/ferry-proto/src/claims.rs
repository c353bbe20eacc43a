//! A client's claims and their canonical encoding.
//!
//! ```text
//! claims = [ "ferry-claims-v1", name: tstr, epoch: uint, [ [key: tstr, value: tstr]* ] ]
//! ```
//!
//! One CBOR array (RFC 8949) in core deterministic encoding (§4.2.1: definite lengths,
//! shortest-form integers and lengths), attribute pairs sorted by the bytes of their key, with
//! no repeated key. The psk is derived over exactly these bytes, so changing any claim changes
//! the key. A decoder accepts only bytes that re-encode to themselves.

use std::collections::BTreeMap;

use ciborium::Value;

use crate::names::{self, NameError};

const TAG: &str = "ferry-claims-v1";
/// Most attributes one client may carry.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest canonical encoding a decoder accepts.
pub const MAX_ENCODED_LEN: usize = 8192;

/// Why claims were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// A name, attribute key or value breaks its rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The `role` attribute is missing.
    #[error("claims must include a role")]
    NoRole,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    #[error("at most {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    /// The epoch is zero.
    #[error("epoch must be at least 1")]
    ZeroEpoch,
    /// The bytes are not a canonical claims encoding.
    #[error("malformed claims encoding")]
    Malformed,
}

/// What a client claims to be: name, epoch and attributes (at least `role`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    name: String,
    epoch: u64,
    attributes: BTreeMap<String, String>,
}

impl Claims {
    /// Builds and validates claims.
    pub fn new<K: Into<String>, V: Into<String>>(
        name: &str,
        epoch: u64,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ClaimsError> {
        let attributes = attributes
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_parts(name.to_owned(), epoch, attributes)
    }

    fn from_parts(
        name: String,
        epoch: u64,
        attributes: BTreeMap<String, String>,
    ) -> Result<Self, ClaimsError> {
        names::validate_client_name(&name)?;
        if epoch == 0 {
            return Err(ClaimsError::ZeroEpoch);
        }
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(ClaimsError::TooManyAttributes);
        }
        for (k, v) in &attributes {
            names::validate_attr_key(k)?;
            names::validate_attr_value(v)?;
        }
        if !attributes.contains_key("role") {
            return Err(ClaimsError::NoRole);
        }
        Ok(Self {
            name,
            epoch,
            attributes,
        })
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The credential's epoch; re-issuing a credential bumps it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The attributes, sorted by key.
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// The `role` attribute.
    pub fn role(&self) -> &str {
        self.attributes.get("role").map_or("", String::as_str)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let pairs = self
            .attributes
            .iter()
            .map(|(k, v)| Value::Array(vec![Value::Text(k.clone()), Value::Text(v.clone())]))
            .collect();
        let value = Value::Array(vec![
            Value::Text(TAG.to_owned()),
            Value::Text(self.name.clone()),
            Value::Integer(self.epoch.into()),
            Value::Array(pairs),
        ]);
        let mut out = Vec::new();
        // Writing a Value into a Vec cannot fail.
        let _ = ciborium::into_writer(&value, &mut out);
        out
    }

    /// Decodes a canonical encoding, refusing anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(ClaimsError::Malformed);
        }
        let value: Value = ciborium::from_reader(bytes).map_err(|_| ClaimsError::Malformed)?;
        let Value::Array(items) = value else {
            return Err(ClaimsError::Malformed);
        };
        let [
            Value::Text(tag),
            Value::Text(name),
            Value::Integer(epoch),
            Value::Array(pairs),
        ] = <[Value; 4]>::try_from(items).map_err(|_| ClaimsError::Malformed)?
        else {
            return Err(ClaimsError::Malformed);
        };
        if tag != TAG || pairs.len() > MAX_ATTRIBUTES {
            return Err(ClaimsError::Malformed);
        }
        let epoch = u64::try_from(epoch).map_err(|_| ClaimsError::Malformed)?;
        let mut attributes = BTreeMap::new();
        for pair in pairs {
            let Value::Array(kv) = pair else {
                return Err(ClaimsError::Malformed);
            };
            let [Value::Text(k), Value::Text(v)] =
                <[Value; 2]>::try_from(kv).map_err(|_| ClaimsError::Malformed)?
            else {
                return Err(ClaimsError::Malformed);
            };
            if attributes.insert(k, v).is_some() {
                return Err(ClaimsError::Malformed);
            }
        }
        let claims = Self::from_parts(name, epoch, attributes)?;
        if claims.encode() != bytes {
            return Err(ClaimsError::Malformed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Claims {
        Claims::new("alice", 3, [("role", "writer"), ("team", "ops")]).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = alice();
        assert_eq!(Claims::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn exact_bytes() {
        // Fixed so that another implementation can check its encoder against it.
        let c = Claims::new("a", 1, [("role", "r")]).unwrap();
        let mut expected = vec![0x84, 0x6f];
        expected.extend_from_slice(b"ferry-claims-v1");
        expected.extend_from_slice(&[0x61, b'a', 0x01, 0x81, 0x82, 0x64]);
        expected.extend_from_slice(b"role");
        expected.extend_from_slice(&[0x61, b'r']);
        assert_eq!(c.encode(), expected);
    }

    /// The test vector of PROTOCOL.md §4.1 for attribute order: keys sorted by their own
    /// bytes, lexicographically (`ab` < `b` < `role` < `roles` < `zz`), not shorter keys
    /// first as RFC 8949 §4.2.1 orders the keys of a map.
    #[test]
    fn attribute_order_vector() {
        let c = Claims::new(
            "a",
            1,
            [
                ("zz", "4"),
                ("roles", "3"),
                ("b", "2"),
                ("role", "r"),
                ("ab", "1"),
            ],
        )
        .unwrap();
        let expected = data_encoding::HEXLOWER
            .decode(
                b"846f66657272792d636c61696d732d7631616101858262616261318261626132\
                  8264726f6c6561728265726f6c6573613382627a7a6134",
            )
            .unwrap();
        assert_eq!(c.encode(), expected);
        assert_eq!(Claims::decode(&expected).unwrap(), c);
        // The same pairs with shorter keys first are not canonical.
        let mut length_first = expected[..21].to_vec();
        for (k, v) in [
            ("b", "2"),
            ("ab", "1"),
            ("zz", "4"),
            ("role", "r"),
            ("roles", "3"),
        ] {
            length_first.extend_from_slice(&[0x82, 0x60 + k.len() as u8]);
            length_first.extend_from_slice(k.as_bytes());
            length_first.extend_from_slice(&[0x61, v.as_bytes()[0]]);
        }
        assert_eq!(length_first.len(), expected.len());
        assert_eq!(Claims::decode(&length_first), Err(ClaimsError::Malformed));
    }

    #[test]
    fn order_is_canonical() {
        let a = Claims::new("x", 1, [("role", "r"), ("a", "1")]).unwrap();
        let b = Claims::new("x", 1, [("a", "1"), ("role", "r")]).unwrap();
        assert_eq!(a.encode(), b.encode());
    }

    #[test]
    fn non_canonical_refused() {
        let c = alice();
        let mut bytes = c.encode();
        // Re-encode the epoch (3) in a longer form: 0x18 0x03 instead of 0x03.
        let pos = bytes.iter().position(|&b| b == 0x03).unwrap();
        bytes.splice(pos..=pos, [0x18, 0x03]);
        assert_eq!(Claims::decode(&bytes), Err(ClaimsError::Malformed));
    }

    #[test]
    fn malformed_refused() {
        assert!(Claims::decode(&[]).is_err());
        assert!(Claims::decode(&[0xff]).is_err());
        assert!(Claims::decode(&[0x80]).is_err());
        let c = alice().encode();
        for cut in 0..c.len() {
            assert!(Claims::decode(&c[..cut]).is_err());
        }
        assert_eq!(
            Claims::new("alice", 1, [("team", "x")]),
            Err(ClaimsError::NoRole)
        );
        assert_eq!(
            Claims::new("alice", 0, [("role", "x")]),
            Err(ClaimsError::ZeroEpoch)
        );
    }
}
