//! Third-party servers the tests start (installed by `./cxgate setup`): Redis, Kamailio and
//! sipp. Each runs on free loopback ports, is waited for, and stops with its [`Service`].

use crate::{Service, free_port, repo_root};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program on `PATH` (or in `/usr/sbin`, where Debian puts kamailio).
pub fn program(name: &str) -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/sbin".into());
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| format!("{name} not found (run ./cxgate setup)"))
}

/// Starts a throwaway `redis-server` (installed by `./cxgate setup`) on a free loopback port,
/// without persistence, and waits until it answers PING. Returns it and its URL.
pub fn start_redis(run_dir: &Path) -> Result<(Service, String), String> {
    start_redis_on(run_dir, free_port())
}

/// The same on a given port (to bring a stopped one back where its clients look for it).
pub fn start_redis_on(run_dir: &Path, port: u16) -> Result<(Service, String), String> {
    let program = program("redis-server")?;
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut redis = Service::spawn("redis", &program, &args, &[], run_dir)?;
    let started = std::time::Instant::now();
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let mut buf = [0u8; 7];
            if c.write_all(b"PING\r\n").is_ok()
                && c.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return Ok((redis, format!("redis://127.0.0.1:{port}/0")));
            }
        }
        if !redis.alive() || started.elapsed() > Duration::from_secs(10) {
            return Err(format!("redis did not start:\n{}", redis.log_tail(20)));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Is something bound to this UDP port on loopback?
fn udp_bound(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// Waits until a UDP server started as `s` has bound `port`.
fn wait_udp(s: &mut Service, port: u16) -> Result<(), String> {
    let started = Instant::now();
    while !udp_bound(port) {
        if !s.alive() || started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{} did not bind udp/{port}:\n{}",
                s.name,
                s.log_tail(30)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Where the shipped Kamailio config sends decisions and calls.
#[derive(Clone, Debug)]
pub struct SipRoutes {
    pub listen: u16,
    pub decision_url: String,
    pub cloud: u16,
    pub legacy: u16,
    /// More `-A` defines (`NAME="value"`).
    pub defines: Vec<String>,
}

/// Starts Kamailio with the shipped `sip/kamailio.cfg`, only its defines set for these
/// ports, and waits until it answers OPTIONS.
pub fn start_kamailio(run_dir: &Path, r: &SipRoutes) -> Result<Service, String> {
    let runtime = run_dir.join(format!("kamailio-{}", r.listen));
    std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
    let defines = [
        format!("LISTEN=udp:127.0.0.1:{}", r.listen),
        format!("DECISION_URL=\"{}\"", r.decision_url),
        format!("CLOUD_NEXT_HOP=\"sip:127.0.0.1:{}\"", r.cloud),
        format!("LEGACY_NEXT_HOP=\"sip:127.0.0.1:{}\"", r.legacy),
        "WORKERS=2".to_string(),
    ]
    .into_iter()
    .chain(r.defines.iter().cloned());
    let mut args = vec![
        "-f".to_string(),
        repo_root().join("sip/kamailio.cfg").display().to_string(),
        "-DD".into(),
        "-E".into(),
        "-Y".into(),
        runtime.display().to_string(),
        "-P".into(),
        runtime.join("kamailio.pid").display().to_string(),
        "-w".into(),
        runtime.display().to_string(),
        "-m".into(),
        "64".into(),
        "-M".into(),
        "16".into(),
    ];
    for d in defines {
        args.push("-A".into());
        args.push(d);
    }
    let name = format!("kamailio-{}", r.listen);
    let mut k = Service::spawn(&name, &program("kamailio")?, &args, &[], run_dir)?.graceful();
    let sock = UdpSocket::bind(("127.0.0.1", 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let local = sock.local_addr().map_err(|e| e.to_string())?.port();
    let started = Instant::now();
    for n in 0u32.. {
        let options = format!(
            "OPTIONS sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ready{n}\r\n\
             From: <sip:probe@127.0.0.1>;tag=r{n}\r\nTo: <sip:127.0.0.1:{p}>\r\nCall-ID: ready-{n}@127.0.0.1\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\nContent-Length: 0\r\n\r\n",
            p = r.listen
        );
        let _ = sock.send_to(options.as_bytes(), ("127.0.0.1", r.listen));
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf
                .get(..len)
                .is_some_and(|b| b.starts_with(b"SIP/2.0 200"))
        {
            return Ok(k);
        }
        if !k.alive() || started.elapsed() > Duration::from_secs(15) {
            return Err(format!(
                "kamailio did not answer OPTIONS:\n{}",
                k.log_tail(40)
            ));
        }
    }
    Ok(k)
}

fn sipp_scenario(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/sipp")
        .join(name)
        .display()
        .to_string()
}

/// A platform UAS (`CLOUD` or `LEGACY`) on `port`: answers calls that carry the coexistence
/// headers, 403 to the rest.
pub fn start_platform_uas(run_dir: &Path, platform: &str, port: u16) -> Result<Service, String> {
    let args: Vec<String> = [
        "-sf",
        &sipp_scenario("platform-uas.xml"),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-key",
        "platform",
        platform,
        "-nostdin",
        "-trace_err",
        "-error_file",
        &run_dir
            .join(format!("uas-{platform}-errors.log"))
            .display()
            .to_string(),
        "-trace_msg",
        "-message_file",
        &run_dir
            .join(format!("uas-{platform}.msg"))
            .display()
            .to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let name = format!("uas-{}", platform.to_ascii_lowercase());
    let mut s = Service::spawn(&name, &program("sipp")?, &args, &[], run_dir)?;
    wait_udp(&mut s, port)?;
    Ok(s)
}

/// One carrier call into Kamailio.
#[derive(Clone, Debug, Default)]
pub struct Call {
    pub dnis: String,
    pub target_user: String,
    pub correlation_id: String,
    pub hop: String,
    pub from_platform: String,
}

/// What the carrier saw.
#[derive(Clone, Debug, Default)]
pub struct CallResult {
    /// The final response to the INVITE.
    pub status: Option<u16>,
    /// Provisional responses, in order.
    pub provisional: Vec<u16>,
    /// The final response's headers (lower-case names; the UAS echoes what it received).
    pub headers: HashMap<String, String>,
    /// sipp exited 0 (the scenario completed).
    pub completed: bool,
    pub trace: String,
}

impl CallResult {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn answered_by(&self) -> Option<&str> {
        self.header("x-answered-by")
    }
}

/// Places `call` with sipp (`-m 1`) and reads its message trace.
pub fn place_call(run_dir: &Path, kamailio: u16, call: &Call) -> Result<CallResult, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let trace = run_dir.join(format!("call-{n}.msg"));
    let port = free_port();
    let keys = [
        ("target", &call.target_user),
        ("corr", &call.correlation_id),
        ("hop", &call.hop),
        ("from", &call.from_platform),
    ];
    let mut cmd = Command::new(program("sipp")?);
    cmd.arg(format!("127.0.0.1:{kamailio}"))
        .args(["-sf", &sipp_scenario("carrier-uac.xml"), "-s", &call.dnis])
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1"])
        .args(["-nostdin", "-trace_msg", "-message_file"])
        .arg(&trace)
        .args([
            "-timeout",
            "20s",
            "-timeout_error",
            "-recv_timeout",
            "15000",
        ]);
    for (k, v) in keys {
        cmd.args(["-key", k, v]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("sipp: {e}"))?;
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let mut result = parse_trace(&text);
    result.completed = out.status.success();
    result.trace = text;
    Ok(result)
}

/// The responses to the INVITE in a sipp message trace.
fn parse_trace(text: &str) -> CallResult {
    let mut r = CallResult::default();
    for block in text.split("message received") {
        let Some(start) = block.find("SIP/2.0 ") else {
            continue;
        };
        let msg = block.get(start..).unwrap_or_default();
        let mut lines = msg.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok());
        let headers: HashMap<String, String> = lines
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let invite = headers.get("cseq").is_some_and(|c| c.ends_with("INVITE"));
        match status {
            Some(s) if invite && s < 200 => r.provisional.push(s),
            Some(s) if invite && r.status.is_none() => {
                r.status = Some(s);
                r.headers = headers;
            }
            _ => {}
        }
    }
    r
}
