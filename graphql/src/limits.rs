//! Query limits. Depth, complexity and directives are async-graphql's own; aliases are counted here, at parse
//! time, before anything is validated or executed.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};
use switchyard_core::ErrorCode;

/// Limits applied to every operation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    /// Operations in one batch request (checked by the API before execution).
    pub max_batch: usize,
    /// Database transactions one request may hold at once (`Db::limited`).
    pub max_connections: usize,
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 5000,
            max_aliases: 30,
            max_directives: 10,
            max_batch: 10,
            max_connections: 2,
            introspection: true,
        }
    }
}

pub(crate) struct AliasLimit(pub usize);

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimitExtension(self.0))
    }
}

struct AliasLimitExtension(usize);

#[async_trait::async_trait]
impl Extension for AliasLimitExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut aliases = 0;
        for (_, operation) in document.operations.iter() {
            aliases += count_aliases(&operation.node.selection_set.node);
        }
        for fragment in document.fragments.values() {
            aliases += count_aliases(&fragment.node.selection_set.node);
        }
        if aliases > self.0 {
            let mut error = ServerError::new(
                format!(
                    "the query uses {aliases} aliases; at most {} are allowed",
                    self.0
                ),
                None,
            );
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", ErrorCode::InvalidQuery.as_str());
            return Err(error);
        }
        Ok(document)
    }
}

fn count_aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some()) + count_aliases(&f.node.selection_set.node)
            }
            Selection::InlineFragment(f) => count_aliases(&f.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Refuses control characters (NUL ...) in every string input, in variables and in literals, before anything
/// executes: one check for every text field of every operation, as REST's body extractor does. The error names the
/// argument or variable (with the path inside an input object).
pub(crate) struct TextInputs;

impl ExtensionFactory for TextInputs {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TextInputsExtension)
    }
}

struct TextInputsExtension;

#[async_trait::async_trait]
impl Extension for TextInputsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let mut bad = variables
            .iter()
            .find_map(|(name, value)| control_character(value, name.to_string()));
        if bad.is_none() {
            bad = document
                .operations
                .iter()
                .find_map(|(_, op)| literal_control_character(&op.node.selection_set.node))
                .or_else(|| {
                    document
                        .fragments
                        .values()
                        .find_map(|f| literal_control_character(&f.node.selection_set.node))
                });
        }
        if let Some(field) = bad {
            let mut error = ServerError::new(
                format!(
                    "{field}: {}",
                    switchyard_core::validate::CONTROL_CHARACTER_MESSAGE
                ),
                None,
            );
            let extensions = error.extensions.get_or_insert_with(Default::default);
            extensions.set("code", ErrorCode::ValidationFailed.as_str());
            extensions.set("field", field);
            return Err(error);
        }
        Ok(document)
    }
}

fn control_character(value: &async_graphql::Value, path: String) -> Option<String> {
    use async_graphql::Value;
    match value {
        Value::String(text) => text
            .chars()
            .any(switchyard_core::validate::is_forbidden_char)
            .then_some(path),
        Value::List(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| control_character(item, format!("{path}[{i}]"))),
        // A key is text too, stored as it is in JSON columns (where Postgres refuses a NUL).
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key
                .chars()
                .any(switchyard_core::validate::is_forbidden_char)
            {
                Some(format!("{path}.{}", key.escape_debug()))
            } else {
                control_character(item, format!("{path}.{key}"))
            }
        }),
        _ => None,
    }
}

fn literal_control_character(set: &SelectionSet) -> Option<String> {
    set.items.iter().find_map(|item| match &item.node {
        Selection::Field(f) => f
            .node
            .arguments
            .iter()
            .find_map(|(name, value)| {
                // Variables inside literals were checked with the variables; constants are checked here.
                value
                    .node
                    .clone()
                    .into_const()
                    .and_then(|v| control_character(&v, name.node.to_string()))
            })
            .or_else(|| literal_control_character(&f.node.selection_set.node)),
        Selection::InlineFragment(f) => literal_control_character(&f.node.selection_set.node),
        Selection::FragmentSpread(_) => None,
    })
}
