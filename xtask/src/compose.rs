//! `compose-config`: renders what docker-compose.yml mounts into `.run/compose/`
//! (`cxgate_deploy::compose`).

pub fn run() -> Result<(), String> {
    let root = cxgate_stack::repo_root();
    let out = root.join(".run/compose");
    cxgate_deploy::compose::render(&root, &out)?;
    println!("wrote {} (envoy.yaml, keys/, sidecar.json)", out.display());
    Ok(())
}
