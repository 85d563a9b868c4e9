use super::*;
use serde_json::json;

const CSV: &str = "\
# the migration plan, one row per agent
user_id,extension,status,site,e911_id,migration_status
Ana@Example.com, 4000 ,INACTIVE,berlin,erl-1,cloud
bo@example.com,4001,ACTIVE,,,
cy@example.com,4002,ACTIVE,munich,erl-3,transitioning
";

#[test]
fn csv_and_json_rosters_parse_to_the_same_rows() {
    let rows = parse_legacy(CSV, false).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].extension, "4000");
    assert_eq!(rows[1].site, None);
    let json = serde_json::to_string(&json!([
        {"user_id": "Ana@Example.com", "extension": "4000", "status": "INACTIVE", "site": "berlin", "e911_id": "erl-1", "migration_status": "cloud"},
        {"user_id": "bo@example.com", "extension": "4001", "status": "ACTIVE"},
        {"user_id": "cy@example.com", "extension": "4002", "status": "ACTIVE", "site": "munich", "e911_id": "erl-3", "migration_status": "transitioning"}
    ]))
    .unwrap();
    let from_json = parse_legacy(&json, true).unwrap();
    assert_eq!(merge(&[], &rows), merge(&[], &from_json));
}

#[test]
fn bad_rosters_name_the_record() {
    let cases = [
        (
            "user_id,extension,status\nx@y,1,MAYBE\n",
            "record 1: status",
        ),
        (
            "user_id,extension,status\nx@y,1,ACTIVE\nX@Y,2,ACTIVE\n",
            "record 2: user_id X@Y twice",
        ),
        (
            "user_id,extension,status,migration_status\nx@y,1,ACTIVE,moved\n",
            "record 1: migration_status",
        ),
        ("user_id,extension\nx@y,1\n", "record 1"),
        (
            "user_id,extension,status,colour\nx@y,1,ACTIVE,red\n",
            "record 1",
        ),
    ];
    for (text, want) in cases {
        let err = parse_legacy(text, false).unwrap_err();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn merge_keys_by_lower_case_email_and_a_cloud_only_agent_has_moved() {
    let users = json!([
        {"id": "g-1", "email": "ana@example.com", "state": "active", "routingStatus": {"status": "IDLE"}},
        {"id": "g-9", "email": "Dee@Example.com", "state": "active"},
        {"id": "g-0", "name": "no email"}
    ]);
    let cloud = cloud_rows(users.as_array().unwrap());
    assert_eq!(cloud.len(), 2);
    let agents = merge(&cloud, &parse_legacy(CSV, false).unwrap());
    let ana = &agents["ana@example.com"];
    assert_eq!(ana.migration, Migration::Cloud);
    assert_eq!(
        ana.cloud.as_ref().unwrap().routing_status.as_deref(),
        Some("IDLE")
    );
    assert_eq!(
        ana.legacy.as_ref().unwrap().e911_id.as_deref(),
        Some("erl-1")
    );
    assert_eq!(agents["bo@example.com"].migration, Migration::Legacy);
    assert_eq!(agents["dee@example.com"].migration, Migration::Cloud);
    assert!(agents["dee@example.com"].legacy.is_none());
}

#[test]
fn reconciliation_suspends_once_keeps_the_first_time_and_releases_when_resolved() {
    let rows = parse_legacy(CSV, false).unwrap();
    let active = |email: &str| CloudRow {
        key: email.into(),
        agent: CloudAgent {
            id: format!("g-{email}"),
            active: true,
            routing_status: None,
            queues: vec![],
        },
    };
    // cy is ACTIVE on legacy and active in the cloud: a zombie. ana is INACTIVE on legacy.
    let agents = merge(
        &[active("cy@example.com"), active("ana@example.com")],
        &rows,
    );
    let first = reconcile(&BTreeMap::new(), &agents, 1_000);
    assert_eq!(first.newly, vec!["cy@example.com".to_string()]);
    assert_eq!(first.suspended.len(), 1);
    let again = reconcile(&first.suspended, &agents, 2_000);
    assert!(again.newly.is_empty(), "logged once, not at every round");
    assert_eq!(again.suspended["cy@example.com"].since_ms, 1_000);
    // Resolved: cy no longer active in the cloud.
    let agents = merge(&[active("ana@example.com")], &rows);
    let after = reconcile(&again.suspended, &agents, 3_000);
    assert!(after.suspended.is_empty());
    assert_eq!(after.released, vec!["cy@example.com".to_string()]);
}
