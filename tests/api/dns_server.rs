//! Minimal authoritative DNS server for integration tests.
//!
//! Serves TXT, A and AAAA records from in-memory maps on 127.0.0.1 (UDP, plus
//! TCP on the same port for responses too large for a 512-byte UDP datagram).
//! Unknown names get NXDOMAIN; known names queried for other types get
//! NOERROR/empty.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<String>>,
    addrs: HashMap<String, Vec<IpAddr>>,
}

type Records = Arc<Mutex<Zone>>;

const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const RCODE_NOERROR: u8 = 0;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
const MAX_UDP_PAYLOAD: usize = 512;

pub struct TestDnsServer {
    addr: SocketAddr,
    records: Records,
    tasks: Vec<JoinHandle<()>>,
}

impl TestDnsServer {
    /// Binds UDP (and TCP on the same port) on 127.0.0.1 and starts serving.
    pub async fn start() -> TestDnsServer {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        let records: Records = Arc::new(Mutex::new(Zone::default()));

        let udp = Arc::new(udp);
        let udp_records = records.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(resp) = respond(&buf[..len], &udp_records, Some(MAX_UDP_PAYLOAD)) {
                    let _ = udp.send_to(&resp, peer).await;
                }
            }
        });

        let tcp_records = records.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let records = tcp_records.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        let Some(resp) = respond(&msg, &records, None) else {
                            return;
                        };
                        let mut framed = (resp.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&resp);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });

        TestDnsServer {
            addr,
            records,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the TXT values at `name` (an empty vec keeps the name existing
    /// with no TXT records, i.e. NOERROR/empty rather than NXDOMAIN).
    pub fn set_txt(&self, name: &str, values: Vec<String>) {
        self.records.lock().unwrap().txt.insert(normalize(name), values);
    }

    /// Replaces the A and AAAA records at `name` (IPv4 addresses answer A
    /// queries, IPv6 ones AAAA queries).
    pub fn set_addrs(&self, name: &str, addrs: Vec<IpAddr>) {
        self.records.lock().unwrap().addrs.insert(normalize(name), addrs);
    }

    /// Removes `name`; subsequent queries get NXDOMAIN.
    pub fn clear(&self, name: &str) {
        let mut zone = self.records.lock().unwrap();
        zone.txt.remove(&normalize(name));
        zone.addrs.remove(&normalize(name));
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Binds a UDP socket on an ephemeral loopback port and a TCP listener on the
/// same port, retrying if the TCP side of that port happens to be taken.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("TestDnsServer: could not bind UDP and TCP on the same loopback port");
}

/// Builds the response for one query message; `None` means drop it silently.
fn respond(query: &[u8], records: &Records, udp_limit: Option<usize>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let flags_hi = query[2];
    if flags_hi & 0x80 != 0 {
        return None; // a response, not a query
    }
    let opcode = (flags_hi >> 3) & 0x0f;
    let rd = flags_hi & 0x01;
    let qdcount = u16::from_be_bytes([query[4], query[5]]);

    let header = |rcode: u8, tc: bool, qd: u16, an: u16| -> Vec<u8> {
        let mut h = Vec::with_capacity(12);
        h.extend_from_slice(&query[0..2]); // ID
        h.push(0x80 | (opcode << 3) | 0x04 | if tc { 0x02 } else { 0 } | rd); // QR=1, opcode, AA=1, TC, RD copied
        h.push(0x80 | (rcode & 0x0f)); // RA=1
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&an.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
        h
    };

    if opcode != 0 {
        return Some(header(RCODE_NOTIMP, false, 0, 0));
    }
    if qdcount != 1 {
        return Some(header(RCODE_FORMERR, false, 0, 0));
    }
    let Some((name, question_end)) = parse_question_name(query) else {
        return Some(header(RCODE_FORMERR, false, 0, 0));
    };
    if query.len() < question_end + 4 {
        return Some(header(RCODE_FORMERR, false, 0, 0));
    }
    let qtype = u16::from_be_bytes([query[question_end], query[question_end + 1]]);
    let qclass = [query[question_end + 2], query[question_end + 3]];
    let question = &query[12..question_end + 4];

    let answers: Option<Vec<Vec<u8>>> = {
        let zone = records.lock().unwrap();
        let (txt, addrs) = (zone.txt.get(&name), zone.addrs.get(&name));
        (txt.is_some() || addrs.is_some()).then(|| match qtype {
            TYPE_TXT => txt.into_iter().flatten().map(|v| txt_rdata(v)).collect(),
            TYPE_A | TYPE_AAAA => addrs
                .into_iter()
                .flatten()
                .filter_map(|ip| match (ip, qtype) {
                    (IpAddr::V4(v4), TYPE_A) => Some(v4.octets().to_vec()),
                    (IpAddr::V6(v6), TYPE_AAAA) => Some(v6.octets().to_vec()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        })
    };
    let Some(answers) = answers else {
        let mut resp = header(RCODE_NXDOMAIN, false, 1, 0);
        resp.extend_from_slice(question);
        return Some(resp);
    };

    let mut resp = header(RCODE_NOERROR, false, 1, answers.len() as u16);
    resp.extend_from_slice(question);
    for rdata in answers {
        resp.extend_from_slice(&[0xC0, 0x0C]); // name: pointer to the question name
        resp.extend_from_slice(&qtype.to_be_bytes());
        resp.extend_from_slice(&qclass);
        resp.extend_from_slice(&0u32.to_be_bytes()); // TTL 0
        resp.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        resp.extend_from_slice(&rdata);
    }

    if let Some(limit) = udp_limit {
        if resp.len() > limit {
            // Too big for UDP: truncated, question only; the client retries over TCP.
            let mut tc = header(RCODE_NOERROR, true, 1, 0);
            tc.extend_from_slice(question);
            return Some(tc);
        }
    }
    Some(resp)
}

/// A TXT record's RDATA: the value as character-strings of at most 255 bytes.
fn txt_rdata(value: &str) -> Vec<u8> {
    let mut rdata = Vec::new();
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        rdata.push(0);
    }
    for chunk in bytes.chunks(255) {
        rdata.push(chunk.len() as u8);
        rdata.extend_from_slice(chunk);
    }
    rdata
}

/// Reads the uncompressed QNAME starting at offset 12. Returns the lowercase
/// dotted name (no trailing dot) and the offset just past the name.
fn parse_question_name(msg: &[u8]) -> Option<(String, usize)> {
    let mut pos = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None; // compression pointers not supported in questions
        }
        let label = msg.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
    }
    Some((labels.join("."), pos))
}
