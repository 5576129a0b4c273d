//! The OpenAPI document of the API, generated from the handlers and the wire types.
//!
//! Each handler in `api/` carries a `#[utoipa::path]` attribute naming every status it
//! answers and the error codes behind each; the request and answer schemas are derived from
//! the `gridwork-api` types (feature `openapi`), so a field added there is in the document.
//! The document is built once, on first request, and served as the same bytes after.
//!
//! Every error answer is an [`ErrorBody`]; the descriptions here name its codes.

use std::sync::OnceLock;

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayItems, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::Number;
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// The `500` answer: the node's storage failed.
pub(super) const INTERNAL: &str =
    "`internal`: the node's storage or a worker thread failed; the node's log says why";

/// The `503` answer of routes that hold bodies in memory.
pub(super) const BUSY: &str = "`busy`: the node holds as many request and answer bodies as it \
    allows; retry after Retry-After seconds";

/// The `408` answer of routes with a body.
pub(super) const BODY_TIMEOUT: &str =
    "`body_timeout`: the body paused too long between pieces or took too long in all";

/// The `401` answer of signed writes.
pub(super) const SIGNATURE_401: &str = "`signature_required`, `digest_required`, \
    `bad_signature` (malformed, or does not verify for this request to this node), \
    `signature_expired` (signed more than 10 minutes from the node's clock)";

/// The `gridwork-signature` header of signed writes.
pub(super) const SIGNATURE_HEADER_DOC: &str = "`<public key hex>.<time ms>.<signature hex>`: \
    Ed25519 over gridwork_api::signed_request_message (node key, method, path, time, the \
    digest in gridwork-digest), by a ledger account holding funds or stake";

/// The `gridwork-digest` header of signed writes.
pub(super) const DIGEST_HEADER_DOC: &str =
    "Hex BLAKE3 digest the signature covers; the body must match it";

/// The `gridwork-key-proof` header of pins and key grants.
pub(super) const KEY_PROOF_HEADER_DOC: &str = "Hex of BLAKE3 derive_key(\"gridwork tree holder \
    proof v2\", data key || tree id || node key): proof that the request holds the tree's key";

/// The `gridwork-signature` header of a log read.
pub(super) const LOG_SIGNATURE_DOC: &str = "`<public key hex>.<time ms>.<signature hex>` over \
    gridwork_api::signed_request_message for GET and this path, with the BLAKE3 digest of the \
    query string, by the job's requester, the run's provider, the task's executor or a \
    council member";

/// The optional `gridwork-signature` header of a fetch.
pub(super) const FETCH_SIGNATURE_DOC: &str = "Optional: signed (over the BLAKE3 digest of the \
    body) by a funded account, a fetch is answered up to 64 MiB; unsigned, up to a smaller \
    cap, the rest deferred";

/// The body of questions about chunk ids.
pub(super) const IDS_BODY_DOC: &str = "`{\"ids\": [hex]}`, or with content-type \
    application/octet-stream the ids as 32 bytes each, end to end";

/// A binary body: bytes as they are (uploads, frames, bitmaps).
pub(super) struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// Makes the schemas as strict as the server:
///
/// - every object is closed: the node serializes exactly the fields of its types and refuses
///   unknown fields in every JSON body it reads, so a property the document does not name is
///   a mismatch (the API fuzzer checks answers against this);
/// - every unsigned integer (`uint8` ... `uint64`, feature `non_strict_integers`) gets the
///   maximum of its width, which the parser enforces and the format alone does not say.
struct Strict;

impl Modify for Strict {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = doc.components.as_mut() {
            components.schemas.values_mut().for_each(tighten);
        }
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.iter_mut().flatten();
                parameters
                    .filter_map(|p| p.schema.as_mut())
                    .for_each(tighten);
            }
        }
    }
}

fn tighten(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            if !object.properties.is_empty() && object.additional_properties.is_none() {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
            let widest = match &object.format {
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)) => Some(u64::from(u8::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt16)) => Some(u64::from(u16::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)) => Some(u64::from(u32::MAX)),
                Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)) => Some(u64::MAX),
                _ => None,
            };
            if let (Some(max), None) = (widest, &object.maximum) {
                object.maximum = Some(Number::UInt(max as usize));
            }
            object.properties.values_mut().for_each(tighten);
            if let Some(AdditionalProperties::RefOr(items)) =
                object.additional_properties.as_deref_mut()
            {
                tighten(items);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                tighten(items);
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(tighten),
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(tighten),
        Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(tighten),
        _ => {}
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&Strict),
    info(
        title = "Gridwork node API",
        version = "1",
        description = "Amounts are strings of base units (10^18 per GRID); hashes are hex \
            (lowercase in answers); addresses are bech32 (grid1...). Every error is \
            `{\"error\": {\"code\", \"message\"}}` with a stable snake_case code; a path no \
            route serves is answered 404 `not_found`. Generated from the node's handlers \
            (crates/node/src/api/).",
    ),
    paths(
        super::health,
        super::metrics,
        super::openapi,
        super::chain,
        super::submit_tx,
        super::get_tx,
        super::get_account,
        super::get_storage,
        super::list_blocks,
        super::get_block,
        super::events,
        super::list_jobs,
        super::get_job,
        super::post_decline,
        super::get_log,
        super::post_log,
        super::list_providers,
        super::get_provider,
        super::list_services,
        super::get_service,
        super::missing_chunks,
        super::put_chunks,
        super::fetch_chunks,
        super::get_chunk,
        super::put_chunk,
        super::get_grants,
        super::post_grant,
        super::get_pin,
        super::pin_tree,
        super::pin_tree_from,
    ),
    tags(
        (name = "node", description = "Liveness, metrics and this document"),
        (name = "chain", description = "Ledger state, transactions, blocks and events"),
        (name = "jobs", description = "The batch market: jobs, tasks, providers, logs"),
        (name = "services", description = "Services (stream tasks): councils that serve, what they were paid"),
        (name = "data", description = "The data plane: chunks, pins and key grants"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// [`document`] as JSON, built once.
pub(super) fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the document did not serialize: {e}\"}}"))
    })
}
