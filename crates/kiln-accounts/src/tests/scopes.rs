use crate::{Account, Plan, Scope, TokenInfo};

fn token_with(scopes: &[Scope]) -> TokenInfo {
    TokenInfo {
        id: "0123456789abcdef".into(),
        account_id: "acct".into(),
        name: "t".into(),
        scopes: scopes.to_vec(),
        created_at_ms: 0,
        revoked: false,
    }
}

#[test]
fn scope_names_round_trip() {
    for scope in Scope::ALL {
        assert_eq!(scope.to_string().parse::<Scope>().unwrap(), scope);
        let json = serde_json::to_string(&scope).unwrap();
        assert_eq!(json, format!("\"{scope}\""));
    }
    assert_eq!(Scope::VectorizeEdit.to_string(), "vectorize:edit");
    assert!("vectorize:write".parse::<Scope>().is_err());
}

#[test]
fn parse_list_dedups_orders_and_knows_all() {
    assert_eq!(
        Scope::parse_list(" vectorize:edit,workers-ai:read ,vectorize:edit").unwrap(),
        vec![Scope::WorkersAiRead, Scope::VectorizeEdit]
    );
    assert_eq!(Scope::parse_list("all").unwrap(), Scope::ALL.to_vec());
    assert_eq!(
        Scope::parse_list("all,workers-ai:read").unwrap(),
        Scope::ALL.to_vec()
    );
    assert!(Scope::parse_list("").is_err());
    assert!(Scope::parse_list(" , ").is_err());
    assert!(Scope::parse_list("workers-ai:read,bogus").is_err());
}

#[test]
fn edit_implies_read_only_for_its_product() {
    let token = token_with(&[Scope::VectorizeEdit]);
    assert!(token.allows(Scope::VectorizeEdit));
    assert!(token.allows(Scope::VectorizeRead));
    assert!(!token.allows(Scope::WorkersAiRead));

    let token = token_with(&[Scope::AiGatewayEdit]);
    assert!(token.allows(Scope::AiGatewayRead));
    assert!(!token.allows(Scope::AiGatewayRun));

    let token = token_with(&[Scope::WorkersAiRead]);
    assert!(!token.allows(Scope::WorkersAiEdit));
    assert_eq!(
        token.require(Scope::WorkersAiEdit).unwrap_err().scope,
        Scope::WorkersAiEdit
    );

    let mut revoked = token_with(&Scope::ALL);
    revoked.revoked = true;
    assert!(!revoked.allows(Scope::WorkersAiRead));
}

#[test]
fn plans_parse_and_serialize_lowercase() {
    assert_eq!("free".parse::<Plan>().unwrap(), Plan::Free);
    assert_eq!("Paid".parse::<Plan>().unwrap(), Plan::Paid);
    assert!("gold".parse::<Plan>().is_err());
    let account = Account {
        id: "a".into(),
        name: "n".into(),
        plan: Plan::Paid,
        created_at_ms: 1,
    };
    let json = serde_json::to_value(&account).unwrap();
    assert_eq!(json["plan"], "paid");
}
