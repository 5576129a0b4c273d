//! Schemas of the API's JSON that no Rust type derives (feature `openapi`): pairs written as
//! two-element arrays, which serde makes of tuples.

use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use gridwork_types::{Address, Hash};

/// A schema inline: the scalar types' schemas are values, never references.
fn inline<T: PartialSchema>() -> Schema {
    match T::schema() {
        RefOr::T(schema) => schema,
        RefOr::Ref(_) => Schema::default(),
    }
}

/// An array of exactly the `items`, in order.
fn pair(items: [Schema; 2], description: &str) -> RefOr<Schema> {
    ArrayBuilder::new()
        .schema_type(Type::Array)
        .prefix_items(items)
        .items(ArrayItems::False)
        .min_items(Some(2))
        .max_items(Some(2))
        .description(Some(description))
        .into()
}

/// `[start, end)` of a task's items.
pub(crate) struct ItemRange;

impl PartialSchema for ItemRange {
    fn schema() -> RefOr<Schema> {
        pair(
            [inline::<u64>(), inline::<u64>()],
            "`[start, end)`: the task's items",
        )
    }
}

impl ToSchema for ItemRange {}

/// `[provider, output]`.
pub(crate) struct RevealPair;

impl PartialSchema for RevealPair {
    fn schema() -> RefOr<Schema> {
        pair(
            [inline::<Address>(), inline::<Hash>()],
            "`[provider, output content id]`",
        )
    }
}

impl ToSchema for RevealPair {}
