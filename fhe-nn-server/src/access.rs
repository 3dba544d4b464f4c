//! Who may call the service: bearer tokens that name tenants, or anonymous access for local
//! demos. A tenant's keys live in a namespace of their own in the key store, so that one
//! tenant can neither use nor count another's.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use sha3::{Digest, Sha3_256};

use fhe_nn_client::api::hex;

/// The shortest token accepted (a guessable token is no authentication).
pub const MIN_TOKEN_LEN: usize = 16;

/// The tenant every request is under with [`Access::Anonymous`].
pub const ANONYMOUS: &str = "anonymous";

/// Why a token list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read the token file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token list, line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("the token list names no tenant")]
    Empty,
}

/// A caller of the service, as its token names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    name: String,
    /// The models it may use; `None`: all.
    models: Option<BTreeSet<String>>,
}

impl Tenant {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the tenant may use model `name`.
    pub fn may_use(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }

    /// The prefix of the tenant's ids in the key store: 16 hexadecimal digits of a hash of
    /// its name (store ids stay hexadecimal whatever the name).
    pub(crate) fn namespace(&self) -> String {
        let digest = Sha3_256::digest(format!("fhe-nn tenant\0{}", self.name));
        hex(&digest[..8])
    }

    /// The store id of the tenant's key `key_id`.
    pub(crate) fn store_id(&self, key_id: &str) -> String {
        format!("{}-{key_id}", self.namespace())
    }
}

/// Tokens and the tenants they name, kept as SHA3-256 digests (the tokens themselves are
/// not held in memory after parsing).
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Tenant>,
}

impl Tokens {
    /// Parses a token list: one tenant per line, `TENANT TOKEN [MODEL,MODEL…]` (tenant names
    /// of letters, digits, `-` and `_`; tokens of at least [`MIN_TOKEN_LEN`] visible
    /// characters; the models it may use, all when absent). Blank lines and lines starting
    /// with `#` are skipped; `;` also separates entries (for an environment variable).
    pub fn parse(text: &str) -> Result<Tokens, AccessError> {
        let mut tokens = Tokens::default();
        let entries = text
            .lines()
            .enumerate()
            .flat_map(|(n, line)| line.split(';').map(move |entry| (n + 1, entry.trim())));
        for (line, entry) in entries {
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let bad = |message: String| AccessError::Line { line, message };
            let fields: Vec<&str> = entry.split_whitespace().collect();
            let (name, token, models) =
                match fields[..] {
                    [name, token] => (name, token, None),
                    [name, token, models] => (name, token, Some(models)),
                    _ => return Err(bad(
                        "expected `TENANT TOKEN [MODEL,MODEL…]` (the token itself is not shown)"
                            .into(),
                    )),
                };
            let valid_name = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return Err(bad(format!(
                    "tenant `{}` (letters, digits, `-`, `_`)",
                    name.chars().take(40).collect::<String>()
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token of `{name}` has {} characters; at least {MIN_TOKEN_LEN}",
                    token.len()
                )));
            }
            let models = models.map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            let tenant = Tenant {
                name: name.to_string(),
                models,
            };
            if tokens.by_digest.insert(digest(token), tenant).is_some() {
                return Err(bad(format!(
                    "the token of `{name}` is given twice (each tenant needs its own)"
                )));
            }
        }
        if tokens.by_digest.is_empty() {
            return Err(AccessError::Empty);
        }
        Ok(tokens)
    }

    /// Reads a token list from `path` (see [`parse`](Self::parse)).
    pub fn read(path: &Path) -> Result<Tokens, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Tokens::parse(&text)
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    fn tenant(&self, token: &str) -> Option<&Tenant> {
        self.by_digest.get(&digest(token))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha3_256::digest(token.as_bytes()).into()
}

/// Who may call the service.
#[derive(Clone, Debug)]
pub enum Access {
    /// Every request is the tenant [`ANONYMOUS`], with no token: for local demos and tests
    /// (`fhe-nn-server --allow-anonymous`).
    Anonymous,
    /// Every request but `GET /health` and `GET /metrics` carries `Authorization: Bearer
    /// TOKEN` with a known token; the token names the tenant.
    Tokens(Arc<Tokens>),
}

/// Why a request's caller is not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No bearer token, or an unknown one.
    Unauthenticated(&'static str),
}

impl Access {
    /// The tenant `headers` authenticate.
    pub(crate) fn tenant(&self, headers: &HeaderMap) -> Result<Tenant, Refusal> {
        let tokens = match self {
            Access::Anonymous => {
                return Ok(Tenant {
                    name: ANONYMOUS.to_string(),
                    models: None,
                })
            }
            Access::Tokens(tokens) => tokens,
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(Refusal::Unauthenticated(
                "no `Authorization: Bearer` header",
            ))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Refusal::Unauthenticated(
                "the `Authorization` header is not `Bearer TOKEN`",
            ))?;
        tokens
            .tenant(token)
            .cloned()
            .ok_or(Refusal::Unauthenticated("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn tokens_name_tenants_and_their_models() {
        let tokens = Tokens::parse(
            "# tenants\nalice 0123456789abcdef-alice\n\nbob 0123456789abcdef-bob digits; \
             carol 0123456789abcdef-carol digits,mnist",
        )
        .unwrap();
        assert_eq!(tokens.len(), 3);
        let access = Access::Tokens(Arc::new(tokens));
        let alice = access.tenant(&bearer("0123456789abcdef-alice")).unwrap();
        assert_eq!(alice.name(), "alice");
        assert!(alice.may_use("mnist"));
        let bob = access.tenant(&bearer("0123456789abcdef-bob")).unwrap();
        assert!(bob.may_use("digits") && !bob.may_use("mnist"));
        assert_ne!(alice.namespace(), bob.namespace());
        assert_eq!(alice.store_id("ab").len(), 16 + 1 + 2);
        for refused in [bearer("0123456789abcdef-eve"), bearer(""), HeaderMap::new()] {
            assert!(matches!(
                access.tenant(&refused),
                Err(Refusal::Unauthenticated(_))
            ));
        }
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic YWxpY2U6eA==".parse().unwrap());
        assert!(access.tenant(&basic).is_err());
    }

    #[test]
    fn weak_or_malformed_token_lists_are_refused_without_showing_tokens() {
        for (text, expected) in [
            ("alice short", "at least 16"),
            ("al/ice 0123456789abcdef", "tenant `al/ice`"),
            ("alice", "expected `TENANT TOKEN"),
            (
                "alice 0123456789abcdef\nbob 0123456789abcdef",
                "given twice",
            ),
        ] {
            let error = Tokens::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
        assert!(matches!(
            Tokens::parse("# nobody\n").unwrap_err(),
            AccessError::Empty
        ));
    }
}
