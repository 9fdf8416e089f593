//! What every HTTP request goes through before and around its handler: the request context
//! (tenant, ids, trace), the layers around the whole router (metrics, panics, JSON 404/405/413,
//! body limit), client rate limits, and the JSON body and parameter extractors with our errors.

pub mod context;
pub mod json;
pub mod layers;
pub mod params;
pub mod rate_limit;
