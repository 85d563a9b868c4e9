//! A test-only filter: each request names, in `x-probe-op`, one host capability to exercise
//! through cxgate-kit's proxy implementation. Its root context takes a lease on every tick.
//! The ABI host tests use it to prove the kit and the host agree (CAS across workers, leases,
//! callouts, and the kong profile's refusals).

#[cfg(feature = "proxy")]
mod shell;
