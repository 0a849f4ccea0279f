//! GraphQL requests as the cache sees them: which operation a body selects, whether it
//! reads or writes, whether its answer depends on the token, and the normalised form
//! its cache key is made from (contract §9).
//!
//! Parsing uses `apollo-parser`: it is maintained with Apollo's router, tokenises and
//! parses without building values from the document, and takes a token and a recursion
//! limit, so a hostile document costs a bounded amount of work before it is refused.

use apollo_parser::cst::{self, CstNode};
use apollo_parser::{Lexer, Parser, SyntaxKind, TokenKind};
use serde::{Deserialize, Serialize};

/// Largest GraphQL request body accepted (query, variables and name as JSON). GitHub's
/// own limit on a query is far below it.
pub const MAX_GRAPHQL_BODY: usize = 256 * 1024;
/// Most lexical tokens parsed in one document.
pub const MAX_TOKENS: usize = 20_000;
/// Deepest nesting parsed (selection sets, lists, objects).
pub const MAX_DEPTH: usize = 64;
/// Largest query shared through the mesh (normalised document, name and variables
/// together): a lookup carrying it stays far inside a small frame. Larger queries are
/// read with the asker's token and not shared.
pub const MAX_SHARED_QUERY: usize = 32 * 1024;

/// Why a GraphQL body is not something the cache can key. None of these are served from
/// the cache: the request passes through and GitHub answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphqlError {
    /// The body is larger than [`MAX_GRAPHQL_BODY`].
    #[error("GraphQL body is larger than {MAX_GRAPHQL_BODY} bytes")]
    TooLarge,
    /// The body is not GitHub's JSON shape (`query`, `variables`, `operationName`).
    #[error("GraphQL body is not a JSON object with a query: {0}")]
    Body(String),
    /// The document does not parse, or is deeper or longer than the limits.
    #[error("GraphQL document does not parse: {0}")]
    Syntax(String),
    /// No operation is defined, or `operationName` names none of them, or there are
    /// several and none is named.
    #[error("GraphQL document has no operation to run{0}")]
    NoOperation(String),
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    /// A read: cacheable.
    Query,
    /// A write: never cached, passed through.
    Mutation,
    /// Never cached, passed through.
    Subscription,
}

/// A GraphQL request body as GitHub takes it.
#[derive(Debug, Clone, Deserialize)]
struct Body {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
}

/// A parsed GraphQL request: what the cache decides on and keys by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlRequest {
    /// What the selected operation does.
    pub kind: OperationKind,
    /// The selected operation's name, if it has one.
    pub operation_name: Option<String>,
    /// It selects a field whose answer depends on who asks (`viewer`, `rateLimit`,
    /// any `viewer…` or `isViewer` field), anywhere in the document.
    pub per_token: bool,
    /// The document with no whitespace, comments or commas.
    pub document: String,
    /// The variables as canonical JSON (keys sorted, no whitespace); `{}` when none.
    pub variables: String,
}

impl GraphqlRequest {
    /// Parses a `POST /graphql` body.
    pub fn parse(body: &[u8]) -> Result<Self, GraphqlError> {
        if body.len() > MAX_GRAPHQL_BODY {
            return Err(GraphqlError::TooLarge);
        }
        let body: Body =
            serde_json::from_slice(body).map_err(|e| GraphqlError::Body(e.to_string()))?;
        let variables = match body.variables {
            None | Some(serde_json::Value::Null) => "{}".to_string(),
            Some(v @ serde_json::Value::Object(_)) => canonical_json(&v),
            Some(_) => return Err(GraphqlError::Body("variables must be an object".into())),
        };
        let op = select_operation(&body.query, body.operation_name.as_deref())?;
        Ok(Self {
            kind: op.kind,
            operation_name: op.name,
            per_token: op.per_token,
            document: normalise(&body.query)?,
            variables,
        })
    }

    /// A read whose answer every fleet token gets alike: the only kind shared.
    pub fn shareable(&self) -> bool {
        self.kind == OperationKind::Query && !self.per_token
    }

    /// The query as a cache key is made from it (`None` for mutations and
    /// subscriptions, which are never read through the cache).
    pub fn query(&self) -> Option<GraphqlQuery> {
        (self.kind == OperationKind::Query).then(|| GraphqlQuery {
            document: self.document.clone(),
            operation_name: self.operation_name.clone(),
            variables: self.variables.clone(),
            per_token: self.per_token,
        })
    }
}

/// A GraphQL query as the cache keys it, stores it with its answer and sends it to a
/// peer (inside [`crate::CanonicalRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphqlQuery {
    /// The normalised document ([`normalise`]).
    pub document: String,
    /// The operation to run, when the document names it.
    pub operation_name: Option<String>,
    /// Canonical JSON of the variables ([`canonical_json`]).
    pub variables: String,
    /// It reads per-token fields: never shared (see [`GraphqlRequest::per_token`]).
    pub per_token: bool,
}

impl GraphqlQuery {
    /// The JSON body sent to GitHub.
    pub fn body(&self) -> Vec<u8> {
        let variables: serde_json::Value =
            serde_json::from_str(&self.variables).unwrap_or(serde_json::Value::Null);
        let mut body = serde_json::json!({ "query": self.document, "variables": variables });
        if let Some(name) = &self.operation_name {
            body["operationName"] = serde_json::Value::String(name.clone());
        }
        body.to_string().into_bytes()
    }

    /// Its size as shared: what [`MAX_SHARED_QUERY`] bounds.
    pub fn len(&self) -> usize {
        self.document.len()
            + self.variables.len()
            + self.operation_name.as_ref().map_or(0, String::len)
    }

    /// Never true: a query has a document. (Clippy pairs `len` with it.)
    pub fn is_empty(&self) -> bool {
        self.document.is_empty()
    }

    /// Whether a query that arrived already built (from a peer, or from disk) is one
    /// this node would have built: normalised, canonical, a query, its `per_token` as
    /// the document says, within [`MAX_SHARED_QUERY`].
    pub fn check(&self) -> Result<(), GraphqlError> {
        if self.len() > MAX_SHARED_QUERY {
            return Err(GraphqlError::TooLarge);
        }
        let variables: serde_json::Value =
            serde_json::from_str(&self.variables).map_err(|e| GraphqlError::Body(e.to_string()))?;
        if !variables.is_object() || canonical_json(&variables) != self.variables {
            return Err(GraphqlError::Body("variables are not canonical".into()));
        }
        if normalise(&self.document)? != self.document {
            return Err(GraphqlError::Syntax("document is not normalised".into()));
        }
        let op = select_operation(&self.document, self.operation_name.as_deref())?;
        if op.kind != OperationKind::Query
            || op.per_token != self.per_token
            || op.name != self.operation_name
        {
            return Err(GraphqlError::NoOperation(
                ": not the query it claims to be".into(),
            ));
        }
        Ok(())
    }
}

/// The operation a document runs, as found in it.
struct Selected {
    kind: OperationKind,
    name: Option<String>,
    per_token: bool,
}

fn parse_document(document: &str) -> Result<cst::Document, GraphqlError> {
    let tree = Parser::new(document)
        .token_limit(MAX_TOKENS)
        .recursion_limit(MAX_DEPTH)
        .parse();
    if let Some(e) = tree.errors().next() {
        return Err(GraphqlError::Syntax(e.message().to_string()));
    }
    Ok(tree.document())
}

/// Finds the operation `operation_name` selects (the only one when it is absent),
/// what it does, and whether anything in the document reads per-token fields.
fn select_operation(
    document: &str,
    operation_name: Option<&str>,
) -> Result<Selected, GraphqlError> {
    let doc = parse_document(document)?;
    let ops: Vec<cst::OperationDefinition> = doc
        .definitions()
        .filter_map(|d| match d {
            cst::Definition::OperationDefinition(op) => Some(op),
            _ => None,
        })
        .collect();
    let name_of = |op: &cst::OperationDefinition| op.name().map(|n| n.text().to_string());
    let op = match operation_name {
        Some(wanted) => ops
            .iter()
            .find(|op| name_of(op).as_deref() == Some(wanted))
            .ok_or_else(|| GraphqlError::NoOperation(format!(" named {wanted:?}")))?,
        None if ops.len() == 1 => &ops[0],
        None if ops.is_empty() => return Err(GraphqlError::NoOperation(String::new())),
        None => {
            return Err(GraphqlError::NoOperation(
                ": several are defined and operationName names none".into(),
            ))
        }
    };
    let kind = match op.operation_type() {
        // The shorthand `{ … }` is a query.
        None => OperationKind::Query,
        Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
        Some(t) if t.subscription_token().is_some() => OperationKind::Subscription,
        Some(_) => OperationKind::Query,
    };
    Ok(Selected {
        kind,
        name: name_of(op),
        per_token: selects_per_token_field(&doc),
    })
}

/// Whether any field of the document (every operation and fragment: a fragment may be
/// spread from the selected one) is one whose answer depends on who asks. Checked on
/// field names, not aliases, so `me: viewer { login }` counts.
///
/// Also per token: an argument that selects by who asks, and a string that says
/// `@me` (`search(query: "review-requested:@me")`).
fn selects_per_token_field(doc: &cst::Document) -> bool {
    doc.syntax().descendants().any(|n| match n.kind() {
        SyntaxKind::FIELD => cst::Field::cast(n)
            .and_then(|f| f.name())
            .is_some_and(|name| is_per_token_field(&name.text())),
        SyntaxKind::ARGUMENT => cst::Argument::cast(n)
            .and_then(|a| a.name())
            .is_some_and(|name| is_per_token_argument(&name.text())),
        SyntaxKind::STRING_VALUE => n.text().to_string().contains("@me"),
        _ => false,
    })
}

/// `viewer` and `rateLimit` are the asker's own; GitHub's `viewer…` fields on other
/// types (`viewerPermission`, `viewerHasStarred`, `viewerCanAdminister`) and `…Viewer`
/// fields (`isViewer`, `isFollowingViewer`, `isSponsoringViewer`) describe the asker's
/// relation to a shared object, so they differ per token too.
pub fn is_per_token_field(name: &str) -> bool {
    name.starts_with("viewer") || name.ends_with("Viewer") || name == "rateLimit"
}

/// Arguments that select by who asks: `viewerCanAdmin:`, the `affiliations` of
/// `repositories` (owner, collaborator, member: of the asker).
fn is_per_token_argument(name: &str) -> bool {
    name.starts_with("viewer") || name.ends_with("ffiliations")
}

/// The document's significant tokens, separated by one space only where two names or
/// numbers would otherwise run together. Whitespace, comments and commas (insignificant
/// in GraphQL) are dropped, so every spelling of one document is one string. Strings are
/// kept as written: `"a"` and `"""a"""` stay two keys, which costs a call, never a
/// wrong answer.
pub fn normalise(document: &str) -> Result<String, GraphqlError> {
    let (tokens, errors) = Lexer::new(document).with_limit(MAX_TOKENS).lex();
    if let Some(e) = errors.first() {
        return Err(GraphqlError::Syntax(e.message().to_string()));
    }
    let mut out = String::with_capacity(document.len());
    let mut prev_sticky = false;
    for t in &tokens {
        let kind = t.kind();
        if matches!(
            kind,
            TokenKind::Whitespace | TokenKind::Comment | TokenKind::Comma | TokenKind::Eof
        ) {
            continue;
        }
        // Two names or numbers would run together, and so would two strings (the empty
        // string before another, written without a space, opens a block string): one
        // space keeps them apart, so that the normalised document lexes to exactly the
        // tokens of the original.
        let sticky = matches!(
            kind,
            TokenKind::Name | TokenKind::Int | TokenKind::Float | TokenKind::StringValue
        );
        if sticky && prev_sticky {
            out.push(' ');
        }
        out.push_str(t.data());
        prev_sticky = sticky;
    }
    Ok(out)
}

/// JSON with object keys sorted and no whitespace: one text for one value.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
#[path = "graphql_tests.rs"]
mod tests;
