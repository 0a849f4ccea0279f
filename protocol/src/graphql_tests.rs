use super::*;

fn body(query: &str, variables: serde_json::Value, name: Option<&str>) -> Vec<u8> {
    let mut b = serde_json::json!({ "query": query, "variables": variables });
    if let Some(n) = name {
        b["operationName"] = n.into();
    }
    serde_json::to_vec(&b).unwrap()
}

fn parse(query: &str) -> Result<GraphqlRequest, GraphqlError> {
    GraphqlRequest::parse(&body(query, serde_json::Value::Null, None))
}

const ISSUES: &str = r#"
query Issues($owner: String!, $name: String!, $after: String) {
  repository(owner: $owner, name: $name) {
    issues(first: 100, after: $after, states: [OPEN]) {
      nodes { number title }
      pageInfo { hasNextPage endCursor }
    }
  }
}"#;

#[test]
fn every_spelling_of_one_query_normalises_to_one_document() {
    let reformatted = "# the open issues\nquery Issues( $owner:String! ,$name :String!, $after:String ){repository(owner:$owner,name:$name){\n\tissues(first:100 after:$after states:[OPEN]){nodes{number,title} pageInfo{hasNextPage,endCursor}}}}";
    let a = parse(ISSUES).unwrap();
    let b = parse(reformatted).unwrap();
    assert_eq!(a.document, b.document);
    assert_eq!(
        a.document,
        "query Issues($owner:String!$name:String!$after:String){repository(owner:$owner name:$name){issues(first:100 after:$after states:[OPEN]){nodes{number title}pageInfo{hasNextPage endCursor}}}}"
    );
    assert_eq!(a.kind, OperationKind::Query);
    assert_eq!(a.operation_name.as_deref(), Some("Issues"));
    assert!(a.shareable());
}

#[test]
fn what_changes_the_answer_changes_the_document() {
    let a = parse("{ repository(owner: \"o\", name: \"r\") { name } }").unwrap();
    // Another argument, another field order, a string with a comment sign in it.
    for other in [
        "{ repository(owner: \"o\", name: \"s\") { name } }",
        "{ repository(name: \"r\", owner: \"o\") { name } }",
        "{ repository(owner: \"o # x\", name: \"r\") { name } }",
        "{ repository(owner: \"o\", name: \"r\") { name id } }",
    ] {
        assert_ne!(parse(other).unwrap().document, a.document, "{other}");
    }
    // A comment sign inside a string is part of the string.
    let s = parse("{ repository(owner: \"o # x\", name: \"r\") { name } }").unwrap();
    assert!(s.document.contains("\"o # x\""), "{}", s.document);
}

#[test]
fn variables_are_canonical_json() {
    let q = "query($a: Int, $b: String) { x }";
    let one = GraphqlRequest::parse(&body(q, serde_json::json!({"b": "x", "a": 1}), None)).unwrap();
    let two = GraphqlRequest::parse(
        br#"{"variables": { "a" : 1 , "b":"x"}, "query": "query($a: Int, $b: String) { x }"}"#,
    )
    .unwrap();
    assert_eq!(one.variables, r#"{"a":1,"b":"x"}"#);
    assert_eq!(one.variables, two.variables);
    assert_eq!(parse(q).unwrap().variables, "{}");
    let nested = canonical_json(
        &serde_json::json!({"z": [{"b": 1, "a": null}], "a": {"d": true, "c": 1.5}}),
    );
    assert_eq!(nested, r#"{"a":{"c":1.5,"d":true},"z":[{"a":null,"b":1}]}"#);
    assert!(matches!(
        GraphqlRequest::parse(br#"{"query": "{ x }", "variables": [1]}"#),
        Err(GraphqlError::Body(_))
    ));
}

#[test]
fn mutations_and_subscriptions_are_never_reads() {
    let m = parse("mutation Add($id: ID!) { addComment(input: {subjectId: $id, body: \"hi\"}) { clientMutationId } }").unwrap();
    assert_eq!(m.kind, OperationKind::Mutation);
    assert!(!m.shareable());
    let s = parse("subscription { issueChanged { id } }").unwrap();
    assert_eq!(s.kind, OperationKind::Subscription);
    assert!(!s.shareable());
    assert_eq!(parse("{ x }").unwrap().kind, OperationKind::Query);
}

#[test]
fn the_operation_name_selects_among_several() {
    let doc = "query A { x } mutation B { y }";
    let b = GraphqlRequest::parse(&body(doc, serde_json::Value::Null, Some("B"))).unwrap();
    assert_eq!(b.kind, OperationKind::Mutation);
    let a = GraphqlRequest::parse(&body(doc, serde_json::Value::Null, Some("A"))).unwrap();
    assert_eq!(a.kind, OperationKind::Query);
    assert_eq!(a.document, b.document, "one document, two operations");
    assert!(matches!(parse(doc), Err(GraphqlError::NoOperation(_))));
    assert!(matches!(
        GraphqlRequest::parse(&body(doc, serde_json::Value::Null, Some("C"))),
        Err(GraphqlError::NoOperation(_))
    ));
    assert!(matches!(
        parse("fragment F on User { login }"),
        Err(GraphqlError::NoOperation(_))
    ));
}

#[test]
fn answers_that_depend_on_the_token_are_found_anywhere() {
    for q in [
        "{ viewer { login } }",
        "{ me: viewer { login } }",
        "{ rateLimit { remaining } }",
        "{ repository(owner: \"o\", name: \"r\") { viewerPermission } }",
        "{ repository(owner: \"o\", name: \"r\") { stargazers(first: 1) { nodes { isViewer } } } }",
        // In a fragment spread from the operation.
        "query { repository(owner: \"o\", name: \"r\") { ...R } } fragment R on Repository { viewerHasStarred }",
        // In an inline fragment.
        "{ node(id: \"x\") { ... on Repository { viewerCanAdminister } } }",
    ] {
        let r = parse(q).unwrap();
        assert!(r.per_token, "{q}");
        assert!(!r.shareable(), "{q}");
    }
    // A field merely aliased as viewer is not one.
    let r = parse("{ viewer: repository(owner: \"o\", name: \"r\") { name } }").unwrap();
    assert!(!r.per_token);
    // Nor is an argument or a string that says viewer.
    let r = parse("{ search(query: \"viewer\", type: REPOSITORY, first: 1) { repositoryCount } }")
        .unwrap();
    assert!(!r.per_token);
}

#[test]
fn bad_documents_are_refused_not_keyed() {
    for q in ["{ x", "query { x(a: ) }", "}", "query Q($a: ) { x }"] {
        assert!(matches!(parse(q), Err(GraphqlError::Syntax(_))), "{q}");
    }
    assert!(matches!(
        GraphqlRequest::parse(b"not json"),
        Err(GraphqlError::Body(_))
    ));
    assert!(matches!(
        GraphqlRequest::parse(br#"{"variables": {}}"#),
        Err(GraphqlError::Body(_))
    ));
}

#[test]
fn hostile_documents_cost_a_bounded_amount() {
    let deep = format!(
        "{}{}",
        "{ a ".repeat(MAX_DEPTH * 4),
        "}".repeat(MAX_DEPTH * 4)
    );
    assert!(matches!(parse(&deep), Err(GraphqlError::Syntax(_))));
    let long = format!("{{ {} }}", "a ".repeat(MAX_TOKENS + 10));
    assert!(matches!(parse(&long), Err(GraphqlError::Syntax(_))));
    let huge = vec![b' '; MAX_GRAPHQL_BODY + 1];
    assert_eq!(GraphqlRequest::parse(&huge), Err(GraphqlError::TooLarge));
}

fn keyed(query: &str, vars: serde_json::Value, name: Option<&str>) -> crate::CanonicalRequest {
    let g = GraphqlRequest::parse(&body(query, vars, name)).unwrap();
    crate::CanonicalRequest::graphql(g.query().unwrap(), None, None).unwrap()
}

#[test]
fn a_query_is_keyed_by_its_document_name_and_variables() {
    let a = keyed(ISSUES, serde_json::json!({"owner": "o", "name": "r"}), None);
    let spelled = keyed(
        "query Issues($owner:String!,$name:String!,$after:String){repository(owner:$owner,name:$name){issues(first:100,after:$after,states:[OPEN]){nodes{number title}pageInfo{hasNextPage endCursor}}}} # done",
        serde_json::json!({"name": "r", "owner": "o"}),
        None,
    );
    assert_eq!(a.key(), spelled.key());
    assert_eq!(a.method, "POST");
    assert_eq!(a.path, crate::GRAPHQL_PATH);
    assert!(a.is_cacheable_read());
    assert!(!a.varies_by_identity());
    assert_eq!(a.check(), Ok(()));
    let other_vars = keyed(ISSUES, serde_json::json!({"owner": "o", "name": "s"}), None);
    assert_ne!(a.key(), other_vars.key());
    let two = "query A { x } query B { y }";
    assert_ne!(
        keyed(two, serde_json::Value::Null, Some("A")).key(),
        keyed(two, serde_json::Value::Null, Some("B")).key()
    );
    // Not the key of a REST request to the same place, and REST keys are unchanged by
    // the new field.
    let rest = crate::CanonicalRequest::new("POST", crate::GRAPHQL_PATH, None, None).unwrap();
    assert_ne!(a.key(), rest.key());
    assert!(!rest.is_cacheable_read());
    let viewer = keyed("{ viewer { login } }", serde_json::Value::Null, None);
    assert!(viewer.varies_by_identity());
}

#[test]
fn a_query_from_a_peer_must_be_one_we_would_have_built() {
    let good = keyed(
        "{ repository(owner: \"o\", name: \"r\") { name } }",
        serde_json::Value::Null,
        None,
    );
    let tamper = |f: &dyn Fn(&mut GraphqlQuery)| {
        let mut r = good.clone();
        f(r.graphql.as_mut().unwrap());
        r.check()
    };
    assert_eq!(tamper(&|_| {}), Ok(()));
    let bad = Err(crate::RequestError::BadGraphql);
    assert_eq!(
        tamper(&|q| q.document = "{ repository(owner: \"o\", name: \"r\") { name } }".into()),
        bad,
        "not normalised"
    );
    assert_eq!(
        tamper(&|q| q.variables = "{ }".into()),
        bad,
        "not canonical"
    );
    assert_eq!(tamper(&|q| q.variables = "[]".into()), bad);
    assert_eq!(
        tamper(&|q| q.document = "mutation{addComment{id}}".into()),
        bad,
        "a write"
    );
    assert_eq!(
        tamper(&|q| q.document = "{viewer{login}}".into()),
        bad,
        "per-token as shared"
    );
    assert_eq!(tamper(&|q| q.operation_name = Some("Other".into())), bad);
    assert_eq!(
        tamper(&|q| q.document = format!("{{a(b:\"{}\")}}", "x".repeat(MAX_SHARED_QUERY))),
        bad,
        "too large"
    );
    let mut wrong_method = good.clone();
    wrong_method.method = "GET".into();
    assert!(wrong_method.check().is_err());
}

#[test]
fn rest_requests_encode_as_before_and_graphql_ones_round_trip() {
    let rest = crate::CanonicalRequest::get("/repos/o/r").unwrap();
    let mut bytes = Vec::new();
    ciborium::into_writer(&rest, &mut bytes).unwrap();
    assert!(
        !bytes.windows(7).any(|w| w == b"graphql"),
        "no new field on REST"
    );
    let q = keyed(
        "query($n: Int) { x(n: $n) }",
        serde_json::json!({"n": 1}),
        None,
    );
    let mut bytes = Vec::new();
    ciborium::into_writer(&q, &mut bytes).unwrap();
    let back: crate::CanonicalRequest = ciborium::from_reader(&bytes[..]).unwrap();
    assert_eq!(back, q);
    assert_eq!(back.key(), q.key());
    assert!(String::from_utf8(q.graphql.unwrap().body())
        .unwrap()
        .contains("\"variables\":{\"n\":1}"));
}

/// The significant tokens of a document, as the lexer reads them.
fn tokens(doc: &str) -> Vec<String> {
    let (tokens, _) = apollo_parser::Lexer::new(doc).lex();
    tokens
        .iter()
        .filter(|t| {
            !matches!(
                t.kind(),
                apollo_parser::TokenKind::Whitespace
                    | apollo_parser::TokenKind::Comment
                    | apollo_parser::TokenKind::Comma
                    | apollo_parser::TokenKind::Eof
            )
        })
        .map(|t| t.data().to_string())
        .collect()
}

#[test]
fn normalising_keeps_every_token_of_the_document() {
    // Two strings side by side must not become a block string: that changed which
    // operations the document held (found in review).
    let sneaky = r#"query Z{nodes(ids:["" "y"]){id}} query M{nodes(ids:["" "]){__typename}} mutation M($id:ID!){addStar(input:{starrableId:$id}){clientMutationId}} #"]){id}}"#;
    for doc in [
        sneaky,
        r#"{ f(a: ["" "a" ""]) }"#,
        r#"{ f(a: """a""") }"#,
        "query($n: Int = 1 , $f: Float = 1.5e3) { a(n: $n, f: $f, e: ENUM, s: \"x y\") @skip(if: false) { ... on T { b } ...F } } fragment F on T { c }",
    ] {
        let n = normalise(doc).unwrap();
        assert_eq!(tokens(&n), tokens(doc), "{doc}");
        assert_eq!(normalise(&n).unwrap(), n);
    }
    assert_ne!(
        normalise(r#"{ f(a: ["" "a" ""]) }"#).unwrap(),
        normalise(r#"{ f(a: ["""a"""]) }"#).unwrap()
    );
    // The sneaky document's M is the query it looks like, before and after.
    let g = GraphqlRequest::parse(&body(sneaky, serde_json::Value::Null, Some("M"))).unwrap();
    let again = GraphqlRequest::parse(&body(&g.document, serde_json::Value::Null, Some("M")));
    assert!(matches!(again, Err(GraphqlError::NoOperation(_))) || again.unwrap().kind == g.kind);
}

#[test]
fn arguments_and_strings_that_select_by_the_asker_are_per_token() {
    for q in [
        "{ user(login: \"a\") { isFollowingViewer } }",
        "{ user(login: \"a\") { isSponsoringViewer } }",
        "{ marketplaceListings(viewerCanAdmin: true) { totalCount } }",
        "{ user(login: \"a\") { repositories(affiliations: [OWNER]) { totalCount } } }",
        "{ search(query: \"is:pr review-requested:@me\", type: ISSUE, first: 5) { issueCount } }",
    ] {
        assert!(parse(q).unwrap().per_token, "{q}");
    }
    assert!(
        !parse("{ user(login: \"a\") { login followers { totalCount } } }")
            .unwrap()
            .per_token
    );
}
