//! `graphql/schema.graphql` is the exported SDL that app developers read; it must match the code.

#[test]
fn the_exported_sdl_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let current = switchyard_graphql::sdl();
    assert!(
        committed == current,
        "graphql/schema.graphql is stale: run `cargo run -q --bin switchyard -- print-schema > graphql/schema.graphql`"
    );
}
