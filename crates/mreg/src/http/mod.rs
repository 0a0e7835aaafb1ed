//! What every HTTP route of both listeners shares, below the routes themselves: the error
//! answer of the REST API ([`error::ApiError`]) and the request id each answer carries
//! ([`request_id`]).

pub mod error;
pub mod request_id;
