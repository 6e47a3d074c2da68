//! consolegate: a WebSocket-to-TCP proxy for virtual-machine consoles (noVNC to VNC) that
//! accepts oVirt console tickets.
//!
//! A request flows through the modules in this order: [`server`] accepts and speaks TLS and
//! HTTP, [`target`] chooses the console (an oVirt ticket via [`ticket`], a token file, a token
//! authority), [`connect`] opens the TCP connection, [`vencrypt`] negotiates TLS with VNC
//! servers that want it ([`target_tls`]), [`relay`] pumps bytes. [`web`] serves the console
//! page. [`config`] and [`tls`] turn files into settings; [`proxy`] assembles them; [`cli`] is
//! the command line. Operations: [`proxy_protocol`] reads the real client behind a load
//! balancer, [`admin`] serves [`health`] and [`metrics`], [`notify`] speaks to systemd.

pub mod admin;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod connect;
pub mod health;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod refusal;
pub mod registry;
pub mod relay;
pub mod resume;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod splice;
pub mod target;
pub mod target_tls;
pub mod ticket;
pub mod tls;
pub mod tls_key;
pub mod vencrypt;
pub mod web;
pub mod workers;
