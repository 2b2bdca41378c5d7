//! Layer 3 — Storage: capabilities, not conventions.
//!
//! Storage code never reads headers or tokens. It takes proof: a [`Verified`] principal, or an
//! [`Actor`] made from one. Since neither can be built outside ztgate without a verification,
//! a storage function whose signature asks for one cannot be called before identity ran.
//!
//! ```
//! use ztgate::{Principal, Verified, storage::Actor};
//!
//! // A storage function states its prerequisite in its signature.
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(who: &Verified<Principal>, db: &mut Vec<(String, String)>) {
//!     insert_note(db, &Actor::from(who), "hello");
//! }
//! ```
//!
//! Without a [`Verified`] there is no `Actor`, so `insert_note` cannot be called. Each example
//! below is the one above with the proof replaced by something else, and fails to compile
//! (they are doc tests, so this stays true). A principal alone, which anyone can build, is not
//! a proof:
//!
//! ```compile_fail
//! use ztgate::{Principal, storage::Actor};
//!
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(who: &Principal, db: &mut Vec<(String, String)>) {
//!     insert_note(db, &Actor::from(who), "hello");
//! }
//! ```
//!
//! An `Actor` cannot be written down (its field is private),
//!
//! ```compile_fail
//! use ztgate::storage::Actor;
//!
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(db: &mut Vec<(String, String)>) {
//!     insert_note(db, &Actor { id: "user:admin@acme.com".to_owned() }, "hello");
//! }
//! ```
//!
//! made from its text,
//!
//! ```compile_fail
//! use ztgate::storage::Actor;
//!
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(db: &mut Vec<(String, String)>) {
//!     insert_note(db, &Actor::from("user:admin@acme.com"), "hello");
//! }
//! ```
//!
//! or had by default; and nothing else stands in for one where it is asked for.
//!
//! ```compile_fail
//! use ztgate::storage::Actor;
//!
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(db: &mut Vec<(String, String)>) {
//!     insert_note(db, &Actor::default(), "hello");
//! }
//! ```
//!
//! ```compile_fail
//! use ztgate::storage::Actor;
//!
//! fn insert_note(db: &mut Vec<(String, String)>, by: &Actor, text: &str) {
//!     db.push((by.id().to_owned(), text.to_owned()));
//! }
//!
//! fn handler(db: &mut Vec<(String, String)>) {
//!     insert_note(db, &"user:admin@acme.com", "hello");
//! }
//! ```

use crate::principal::{Principal, Verified};

/// The audit identity of a verified caller, as storage records it (e.g. a row's author).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    id: String,
}

impl Actor {
    /// The principal's [`Principal::id`]: `user:<email>`, `service:<common_name>`,
    /// `api_key:<name>`, `signed:<purpose>:<subject>`, `cert:<fingerprint>`,
    /// `custom:<kind>:<id>`, `anonymous`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<C> From<&Verified<Principal<C>>> for Actor {
    fn from(v: &Verified<Principal<C>>) -> Self {
        Self { id: v.principal().id() }
    }
}
