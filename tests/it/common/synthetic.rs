//! The synthetic pipeline generator lives in the library (`leadpipe::bulk::synthetic`), where
//! `leadpipe demo` uses it too.
#[allow(unused_imports)]
pub use leadpipe::bulk::synthetic::*;
