//! Owns the stand-in for kube-proxy: a TCP forwarder for one Service. It listens on the Service's
//! ports and sends each new connection to the next backend whose readiness probe answers 200,
//! as a ClusterIP Service sends traffic only to ready endpoints.
//! Must not interpret the traffic it forwards.
//! Usage: ha-e2e-proxy --ready PORT:PATH --map SVCPORT:TARGETPORT... BACKEND_IP...

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Backends {
    ips: Vec<IpAddr>,
    ready: Mutex<Vec<bool>>,
    next: AtomicUsize,
}

fn probe(ip: IpAddr, port: u16, path: &str) -> bool {
    let addr = SocketAddr::new(ip, port);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ready = (8080u16, "/readyz".to_string());
    let mut maps: Vec<(u16, u16)> = Vec::new();
    let mut ips = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--ready" => {
                let v = it.next().expect("--ready PORT:PATH");
                let (p, path) = v.split_once(':').expect("--ready PORT:PATH");
                ready = (p.parse().expect("ready port"), path.to_string());
            }
            "--map" => {
                let v = it.next().expect("--map SVC:TARGET");
                let (s, t) = v.split_once(':').expect("--map SVC:TARGET");
                maps.push((s.parse().expect("port"), t.parse().expect("port")));
            }
            ip => ips.push(ip.parse::<IpAddr>().expect("backend IP")),
        }
    }
    let backends = Arc::new(Backends {
        ready: Mutex::new(vec![false; ips.len()]),
        ips,
        next: AtomicUsize::new(0),
    });
    {
        let b = backends.clone();
        std::thread::spawn(move || {
            loop {
                let states: Vec<bool> = b
                    .ips
                    .iter()
                    .map(|ip| probe(*ip, ready.0, &ready.1))
                    .collect();
                *b.ready.lock().expect("ready lock") = states;
                std::thread::sleep(Duration::from_millis(300));
            }
        });
    }
    let mut handles = Vec::new();
    for (svc, target) in maps {
        let listener = TcpListener::bind(("0.0.0.0", svc)).expect("bind service port");
        let b = backends.clone();
        handles.push(std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let ready = b.ready.lock().expect("ready lock").clone();
                let n = b.ips.len();
                let start = b.next.fetch_add(1, Ordering::Relaxed);
                let pick = (0..n).map(|i| (start + i) % n).find(|&i| ready[i]);
                let Some(i) = pick else {
                    // No ready endpoint: the connection is refused, as with an empty Service.
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(SocketAddr::new(b.ips[i], target)) else {
                    continue;
                };
                let (c2, u2) = match (conn.try_clone(), upstream.try_clone()) {
                    (Ok(c), Ok(u)) => (c, u),
                    _ => continue,
                };
                std::thread::spawn(move || pipe(conn, upstream));
                std::thread::spawn(move || pipe(u2, c2));
            }
        }));
    }
    eprintln!("ha-e2e-proxy ready");
    for h in handles {
        let _ = h.join();
    }
}
