//! ACME (RFC 8555) issuance with instant-acme: accounts, orders that survive restarts, and
//! the classification of the CA's problems.

pub mod account;
pub mod client;
pub mod directory;
pub mod order;
pub mod problem;
pub mod revoke;
pub mod slots;
