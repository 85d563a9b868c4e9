//! `compose-config`: renders what docker-compose.yml mounts into `.run/compose/`
//! (`cxgate_e2e::compose`).

pub fn run() -> Result<(), String> {
    let root = cxgate_e2e::repo_root();
    let out = root.join(".run/compose");
    cxgate_e2e::compose::render(&root, &out)?;
    println!("wrote {} (envoy.yaml, keys/, sidecar.json)", out.display());
    Ok(())
}
