//! The web UI's handlers, in process: authentication of every route, CSRF, escaping of
//! hostile text, hardening (secrets, proxies, redirects, limits, timeouts), and the pages
//! against a sandbox cluster (connected, backing up, down).

mod auth;
mod cluster;
mod escaping;
mod hardening;
mod harness;
mod notify;
mod protection;
mod serving;
mod stores;
