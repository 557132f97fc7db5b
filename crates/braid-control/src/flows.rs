//! The flow table's query: filters and paging for `GET /v1/flows`, parsed from the query
//! string with an error that names the bad parameter, and the bounded selection of one page
//! ([`FlowQuery::page`]) that the daemon adapter runs over its flow snapshot.
//!
//! What this file owns: the parameters (`direction`, `nic`, `class`, `protocol`, `address`,
//! `port`, `limit`, `cursor`), their parsing, what a filter matches, and the cursor. What it
//! does not own: the flows themselves (the daemon's tables).
//!
//! # Paging
//!
//! Pages are in flow id order. The cursor is opaque to clients; it carries the last id of the
//! page, so the next page starts after it: a flow that appears between two pages shows up on
//! a later page if its id is higher, and a flow that expires is simply absent. No page is
//! ever more than [`MAX_FLOW_PAGE`] flows, and the selection keeps at most `limit + 1` flows
//! in memory whatever the table's size.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::schema::{Flow, FlowDirection, FlowPage};

/// Most flows in one page.
pub const MAX_FLOW_PAGE: usize = 1000;

/// Flows in a page when `limit` is not given.
pub const DEFAULT_FLOW_PAGE: usize = 100;

/// The query string of `GET /v1/flows`, as documented in OpenAPI. Every parameter is
/// optional; given ones must all match.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowFilterParams {
    /// `tx` or `rx`: one table only.
    pub direction: Option<FlowDirection>,
    /// Flows that use this NIC (by name).
    #[param(min_length = 1)]
    pub nic: Option<String>,
    /// Flows of this flow class (by name).
    #[param(min_length = 1)]
    pub class: Option<String>,
    /// `udp`, `tcp` or a protocol number 0..=255 (at most three digits).
    #[param(pattern = r"^(udp|tcp|[01]?[0-9]?[0-9]|2[0-4][0-9]|25[0-5])$")]
    pub protocol: Option<String>,
    /// Flows with this source or destination address (IPv4 or IPv6).
    #[param(schema_with = address_schema)]
    pub address: Option<String>,
    /// Flows with this source or destination port.
    #[param(maximum = 65535)]
    pub port: Option<u16>,
    /// Flows per page, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^f[0-9a-fA-F]{1,16}$")]
    pub cursor: Option<String>,
}

/// `address`: an IPv4 or an IPv6 address (no prefix, no zone).
fn address_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
    let ip = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    AnyOfBuilder::new()
        .item(ip(KnownFormat::Ipv4))
        .item(ip(KnownFormat::Ipv6))
        .into()
}

/// A checked flow query: what [`crate::Daemon::flows`] gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    /// One table only.
    pub direction: Option<FlowDirection>,
    /// Flows that use this NIC.
    pub nic: Option<String>,
    /// Flows of this flow class.
    pub class: Option<String>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Source or destination address.
    pub address: Option<IpAddr>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// Flows per page, 1..=[`MAX_FLOW_PAGE`].
    pub limit: usize,
    /// Only flows whose id is above this (from the cursor).
    pub after: Option<u64>,
}

impl Default for FlowQuery {
    fn default() -> Self {
        Self {
            direction: None,
            nic: None,
            class: None,
            protocol: None,
            address: None,
            port: None,
            limit: DEFAULT_FLOW_PAGE,
            after: None,
        }
    }
}

/// A flow ordered by id alone, for the selection heap.
struct ById(Flow);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for ById {}
impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ById {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

impl FlowQuery {
    /// Parse a query string (`nic=a&limit=50`), naming the parameter at fault: unknown or
    /// repeated parameters, values of the wrong form, `limit` out of 1..=1000, a cursor this
    /// API did not give.
    ///
    /// # Errors
    /// 422 `invalid_field` with the parameter as the field.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(ApiError::invalid_field(key, "given twice"));
            }
            seen.push(key.clone().into_owned());
            let value = value.as_ref();
            match key.as_ref() {
                "direction" => {
                    q.direction = Some(match value {
                        "tx" => FlowDirection::Tx,
                        "rx" => FlowDirection::Rx,
                        _ => return Err(ApiError::invalid_field(key, "must be tx or rx")),
                    });
                }
                "nic" => q.nic = Some(non_empty(&key, value)?),
                "class" => q.class = Some(non_empty(&key, value)?),
                "protocol" => q.protocol = Some(parse_protocol(value)?),
                "address" => {
                    q.address = Some(value.parse().map_err(|_| {
                        ApiError::invalid_field(
                            key,
                            format!("{value:?} is not an IPv4 or IPv6 address"),
                        )
                    })?);
                }
                "port" => {
                    q.port = Some(digits(value).and_then(|d| d.parse().ok()).ok_or_else(|| {
                        ApiError::invalid_field(key, format!("{value:?} is not a port 0..=65535"))
                    })?);
                }
                "limit" => {
                    q.limit = digits(value)
                        .and_then(|d| d.parse::<usize>().ok())
                        .filter(|n| (1..=MAX_FLOW_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid_field(
                                key,
                                format!("{value:?} must be a number from 1 to {MAX_FLOW_PAGE}"),
                            )
                        })?;
                }
                "cursor" => {
                    q.after = Some(decode_cursor(value).ok_or_else(|| {
                        ApiError::invalid_field(
                            key,
                            "not a cursor this API gave (pass next_cursor unchanged)",
                        )
                    })?);
                }
                other => {
                    return Err(ApiError::invalid_field(
                        other,
                        "unknown parameter; known: direction, nic, class, protocol, address, \
                         port, limit, cursor",
                    ));
                }
            }
        }
        Ok(q)
    }

    /// Does `flow` pass the filters (not the cursor)?
    #[must_use]
    pub fn matches(&self, flow: &Flow) -> bool {
        self.direction.is_none_or(|d| flow.direction == d)
            && self
                .nic
                .as_ref()
                .is_none_or(|n| flow.nics.iter().any(|f| f == n))
            && self
                .class
                .as_ref()
                .is_none_or(|c| flow.class.as_ref() == Some(c))
            && self.protocol.is_none_or(|p| flow.protocol == p)
            && self
                .port
                .is_none_or(|p| flow.src_port == p || flow.dst_port == p)
            && self.address.is_none_or(|a| {
                [&flow.src, &flow.dst]
                    .iter()
                    .any(|s| s.parse::<IpAddr>().is_ok_and(|x| x == a))
            })
    }

    /// One page out of `flows` (any order): the matching flows with an id above the
    /// cursor, the `limit` lowest ids, and the cursor of the next page if there are more.
    /// Memory: `limit + 1` flows, whatever `flows` holds.
    #[must_use]
    pub fn page(&self, flows: impl IntoIterator<Item = Flow>) -> FlowPage {
        let keep = self.limit.clamp(1, MAX_FLOW_PAGE) + 1;
        // A max-heap of the `keep` lowest ids seen so far.
        let mut heap = BinaryHeap::with_capacity(keep + 1);
        for flow in flows {
            if self.after.is_some_and(|a| flow.id <= a) || !self.matches(&flow) {
                continue;
            }
            if heap.len() == keep {
                if heap.peek().is_some_and(|top: &ById| flow.id >= top.0.id) {
                    continue;
                }
                heap.pop();
            }
            heap.push(ById(flow));
        }
        let mut flows: Vec<Flow> = heap.into_sorted_vec().into_iter().map(|f| f.0).collect();
        let next_cursor = if flows.len() == keep {
            flows.pop();
            flows.last().map(|f| encode_cursor(f.id))
        } else {
            None
        };
        FlowPage { flows, next_cursor }
    }
}

fn non_empty(key: &str, value: &str) -> Result<String, ApiError> {
    if value.is_empty() {
        Err(ApiError::invalid_field(
            key,
            "empty; leave the parameter out",
        ))
    } else {
        Ok(value.to_owned())
    }
}

/// `value` if it is a decimal number: ASCII digits only (no sign, no spaces), as the
/// document's `integer` and patterns say.
fn digits(value: &str) -> Option<&str> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then_some(value)
}

/// `udp`, `tcp` or 0..=255 in at most three digits, as the config file's `protocol` (and the
/// document's pattern).
fn parse_protocol(value: &str) -> Result<u8, ApiError> {
    match value {
        "udp" => Ok(17),
        "tcp" => Ok(6),
        v => digits(v)
            .filter(|d| d.len() <= 3)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                ApiError::invalid_field("protocol", format!("{v:?} must be udp, tcp or 0..=255"))
            }),
    }
}

/// The cursor after flow `id`: `f` and the id in hex. Opaque to clients; the prefix lets a
/// later format be told apart.
fn encode_cursor(id: u64) -> String {
    format!("f{id:x}")
}

fn decode_cursor(s: &str) -> Option<u64> {
    let hex = s.strip_prefix('f')?;
    if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PolicyName;

    fn flow(id: u64, nic: &str, port: u16) -> Flow {
        Flow {
            id,
            direction: if id.is_multiple_of(2) {
                FlowDirection::Tx
            } else {
                FlowDirection::Rx
            },
            protocol: 17,
            src: "10.0.0.1".into(),
            dst: "2001:db8::1".into(),
            src_port: 40000,
            dst_port: port,
            dscp: None,
            class: Some("bulk".into()),
            qos_class: None,
            policy: PolicyName::Stripe,
            nics: vec![nic.into()],
            pinned: false,
            rate_bps: 0,
            packets: None,
            bytes: None,
            idle_ms: 0,
        }
    }

    #[test]
    fn parse_names_the_bad_parameter() {
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("port=65536", "port"),
            ("protocol=icmp", "protocol"),
            ("address=10.0.0", "address"),
            ("direction=up", "direction"),
            ("cursor=12", "cursor"),
            ("cursor=f", "cursor"),
            ("cursor=f%2B1", "cursor"),
            ("port=%2B80", "port"),
            ("limit=+5", "limit"),
            ("protocol=0017", "protocol"),
            ("protocol=%2B6", "protocol"),
            ("nic=", "nic"),
            ("nic=a&nic=b", "nic"),
            ("sort=id", "sort"),
        ] {
            let e = FlowQuery::parse(Some(q)).expect_err(q);
            assert_eq!(e.code(), "invalid_field", "{q}");
            assert!(e.message().starts_with(&format!("{field}: ")), "{q}: {e:?}");
        }
    }

    #[test]
    fn parse_reads_every_parameter() {
        let q = FlowQuery::parse(Some(
            "direction=tx&nic=a&class=bulk&protocol=tcp&address=2001:db8::1&port=80&limit=1000&cursor=f1000",
        ))
        .expect("valid");
        assert_eq!(q.direction, Some(FlowDirection::Tx));
        assert_eq!(q.protocol, Some(6));
        assert_eq!(q.address, Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(q.port, Some(80));
        assert_eq!(q.limit, 1000);
        assert_eq!(q.after, Some(0x1000));
        assert_eq!(FlowQuery::parse(None).expect("empty"), FlowQuery::default());
    }

    #[test]
    fn pages_walk_the_table_in_id_order_without_gaps_or_repeats() {
        // 2500 flows in scrambled order; pages of 1000 with a filter on the NIC.
        let flows: Vec<Flow> = (0..2500u64)
            .map(|i| (i * 7919) % 2500)
            .map(|id| flow(id, if id % 3 == 0 { "a" } else { "b" }, 80))
            .collect();
        let mut q = FlowQuery::parse(Some("nic=a&limit=1000")).expect("valid");
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = q.page(flows.iter().cloned());
            assert!(page.flows.len() <= 1000);
            seen.extend(page.flows.iter().map(|f| f.id));
            pages += 1;
            match page.next_cursor {
                Some(c) => q.after = decode_cursor(&c),
                None => break,
            }
        }
        let want: Vec<u64> = (0..2500).filter(|id| id % 3 == 0).collect();
        assert_eq!(seen, want);
        assert_eq!(pages, 1, "834 flows fit one page of 1000");

        let mut q = FlowQuery {
            limit: 100,
            ..FlowQuery::default()
        };
        let first = q.page(flows.iter().cloned());
        assert_eq!(first.flows.first().map(|f| f.id), Some(0));
        assert_eq!(first.flows.len(), 100);
        assert_eq!(first.next_cursor.as_deref(), Some("f63"));
        q.after = Some(2399);
        let last = q.page(flows.iter().cloned());
        assert_eq!(last.flows.len(), 100);
        assert_eq!(last.next_cursor, None, "exactly the last 100: no next page");
    }

    #[test]
    fn filters_match_either_end() {
        let f = flow(4, "a", 443);
        let q = |s: &str| FlowQuery::parse(Some(s)).expect(s);
        assert!(q("port=443").matches(&f));
        assert!(q("port=40000").matches(&f));
        assert!(!q("port=80").matches(&f));
        assert!(
            q("address=2001:db8:0::1").matches(&f),
            "any spelling of the address"
        );
        assert!(q("address=10.0.0.1&protocol=udp&class=bulk&direction=tx").matches(&f));
        assert!(!q("protocol=tcp").matches(&f));
        assert!(!q("class=rt").matches(&f));
        assert!(!q("direction=rx").matches(&f));
    }
}
