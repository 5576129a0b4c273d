//! JSON schemas of the vocabulary types as the API's JSON carries them (feature `openapi`).
//!
//! The scalar types serialize as strings (see each type's `serde` impl), so their schemas are
//! written here by hand: a string with the pattern the type's `FromStr` accepts, in the
//! canonical form answers use. Patterns are what the node's OpenAPI document promises and
//! what API fuzzers generate from, so each is no looser than the parser it describes.

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::{Address, Amount, Hash, PublicKey};

/// Hex of 32 bytes as [`Hash`]'s parser takes it (answers carry it lowercase, without `0x`).
pub const HASH_PATTERN: &str = "^(0x)?[0-9a-fA-F]{64}$";

/// Lowercase hex of 32 bytes, as public keys are written.
pub const HEX32_PATTERN: &str = "^[0-9a-f]{64}$";

/// A bech32 address: prefix `grid`, 20 bytes (32 data characters and a 6-character
/// checksum), all lowercase or all uppercase as bech32 allows; answers are lowercase.
pub const ADDRESS_PATTERN: &str = "^(grid1[02-9ac-hj-np-z]{38}|GRID1[02-9AC-HJ-NP-Z]{38})$";

/// Base units as a decimal string, at most `u128::MAX` (39 digits).
pub const AMOUNT_PATTERN: &str = "^[0-9]{1,39}$";

fn string(pattern: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

impl PartialSchema for Hash {
    fn schema() -> RefOr<Schema> {
        string(
            HASH_PATTERN,
            "BLAKE3 hash: 64 hex digits (lowercase in answers)",
        )
    }
}

impl ToSchema for Hash {}

impl PartialSchema for Address {
    fn schema() -> RefOr<Schema> {
        string(
            ADDRESS_PATTERN,
            "Account address: bech32 with prefix `grid` of 20 bytes",
        )
    }
}

impl ToSchema for Address {}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        string(
            AMOUNT_PATTERN,
            "Base units as a decimal string (10^18 per GRID), at most 2^128 - 1",
        )
    }
}

impl ToSchema for Amount {}

impl PartialSchema for PublicKey {
    fn schema() -> RefOr<Schema> {
        string(HEX32_PATTERN, "Ed25519 public key, 64 lowercase hex digits")
    }
}

impl ToSchema for PublicKey {}
