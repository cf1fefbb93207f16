//! Which keys must have signed which images: `trust.image_signatures`, or
//! one rule for every image from `--image-signature-key` and
//! `--image-signature-policy`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::verify::TrustedKeys;

/// What a rule demands of the images it matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SignaturePolicy {
    /// A valid signature by one of the rule's keys is needed; an image
    /// without one is held back.
    Require,
    /// An image without signatures passes; one whose signatures are present
    /// but none verifies with the rule's keys is held back.
    VerifyIfPresent,
    /// Signatures are not looked at (what an image no rule matches gets).
    #[default]
    Ignore,
}

impl SignaturePolicy {
    /// The name used in configuration, on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SignaturePolicy::Require => "require",
            SignaturePolicy::VerifyIfPresent => "verify-if-present",
            SignaturePolicy::Ignore => "ignore",
        }
    }
}

/// One rule as configured (`trust.image_signatures[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with images, keys and policy")]
pub struct SignatureRuleConfig {
    /// Patterns on the image's source reference (`registry.example.com/*`);
    /// `*` matches any run of characters, `/` included, `?` one character.
    /// A pattern without `:` or `@` also matches every tag and digest of
    /// that repository.
    pub images: Vec<String>,
    /// PEM public keys, or directories of them (`*.pem`, `*.pub`).
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// What the rule demands.
    pub policy: SignaturePolicy,
}

/// A rule with its keys loaded.
#[derive(Debug, Clone)]
pub struct ImageSignatureRule {
    /// The rule's position, 1-based, for reports (`0` for the command
    /// line's rule).
    pub position: usize,
    /// Its image patterns.
    pub images: Vec<String>,
    /// Its keys (none under `ignore`).
    pub keys: Option<Arc<TrustedKeys>>,
    /// What it demands.
    pub policy: SignaturePolicy,
}

/// Every rule, in order: the first that matches an image decides.
#[derive(Debug, Clone, Default)]
pub struct ImageSignatureRules {
    rules: Vec<ImageSignatureRule>,
}

impl ImageSignatureRules {
    /// Loads configured rules, reading every key now so a typo fails at
    /// start and not at the first import.
    pub fn load(configs: &[SignatureRuleConfig]) -> Result<Self> {
        let rules = configs
            .iter()
            .enumerate()
            .map(|(i, config)| load_rule(i + 1, config.images.clone(), &config.keys, config.policy))
            .collect::<Result<_>>()?;
        Ok(Self { rules })
    }

    /// The command line's single rule for every image. Keys without a
    /// policy mean `require`; no keys and no policy mean no rule.
    pub fn for_every_image(keys: &[PathBuf], policy: Option<SignaturePolicy>) -> Result<Self> {
        let policy = match (keys.is_empty(), policy) {
            (true, None) => return Ok(Self::default()),
            (false, None) => SignaturePolicy::Require,
            (_, Some(policy)) => policy,
        };
        Ok(Self {
            rules: vec![load_rule(0, vec!["*".to_owned()], keys, policy)?],
        })
    }

    /// Whether no rule checks anything.
    pub fn is_empty(&self) -> bool {
        self.rules
            .iter()
            .all(|r| r.policy == SignaturePolicy::Ignore)
    }

    /// The rule deciding for the image with this source reference: the first
    /// that matches; `None` means `ignore`.
    pub fn rule_for(&self, source_ref: &str) -> Option<&ImageSignatureRule> {
        self.rules
            .iter()
            .find(|rule| rule.images.iter().any(|p| matches_reference(p, source_ref)))
    }
}

fn load_rule(
    position: usize,
    images: Vec<String>,
    keys: &[PathBuf],
    policy: SignaturePolicy,
) -> Result<ImageSignatureRule> {
    if images.is_empty() {
        return Err(Error::NoPatterns { rule: position });
    }
    let keys = if policy == SignaturePolicy::Ignore && keys.is_empty() {
        None
    } else if keys.is_empty() {
        return Err(Error::NoKeys {
            rule: position,
            images: images.join(", "),
            policy: policy.as_str(),
        });
    } else {
        Some(Arc::new(TrustedKeys::load(keys).map_err(|source| {
            Error::Key {
                rule: position,
                keys: keys.to_vec(),
                source,
            }
        })?))
    };
    Ok(ImageSignatureRule {
        position,
        images,
        keys,
        policy,
    })
}

/// Whether `pattern` matches `reference` whole, or its repository when the
/// pattern names no tag or digest.
fn matches_reference(pattern: &str, reference: &str) -> bool {
    if glob(pattern.as_bytes(), reference.as_bytes()) {
        return true;
    }
    if pattern.contains('@') || pattern.rsplit('/').next().is_some_and(|p| p.contains(':')) {
        return false;
    }
    let repository = reference.split_once('@').map_or(reference, |(r, _)| r);
    let repository = match repository.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => repository,
    };
    glob(pattern.as_bytes(), repository.as_bytes())
}

/// `*` any run of characters, `?` one character, anything else itself.
/// Iterative with one backtrack point, so a hostile pattern stays linear.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_references_and_bare_repositories() {
        let m = matches_reference;
        assert!(m("registry.example.com/*", "registry.example.com/a/b:1.0"));
        assert!(m("quay.io/acme/app", "quay.io/acme/app:1.0"));
        assert!(m("quay.io/acme/app", "quay.io/acme/app@sha256:abc"));
        assert!(!m("quay.io/acme/app", "quay.io/acme/application:1.0"));
        assert!(!m("quay.io/acme/app:2.0", "quay.io/acme/app:1.0"));
        assert!(m("quay.io/acme/app:?.0", "quay.io/acme/app:1.0"));
        assert!(m("localhost:5000/app", "localhost:5000/app:1.0"));
        assert!(!m("docker.io/*", "quay.io/acme/app:1.0"));
        assert!(m("*", "anything/at:all"));
    }

    #[test]
    fn the_first_matching_rule_decides_and_keys_alone_mean_require() {
        let rules = ImageSignatureRules::load(&[
            SignatureRuleConfig {
                images: vec!["quay.io/acme/legacy*".into()],
                keys: Vec::new(),
                policy: SignaturePolicy::Ignore,
            },
            SignatureRuleConfig {
                images: vec!["quay.io/*".into()],
                keys: Vec::new(),
                policy: SignaturePolicy::Ignore,
            },
        ])
        .expect("rules");
        assert_eq!(
            rules.rule_for("quay.io/acme/legacy:1").map(|r| r.position),
            Some(1)
        );
        assert_eq!(
            rules.rule_for("quay.io/acme/app:1").map(|r| r.position),
            Some(2)
        );
        assert!(rules.rule_for("docker.io/library/nginx:1").is_none());
        assert!(
            ImageSignatureRules::for_every_image(&[], Some(SignaturePolicy::Require)).is_err(),
            "require without keys"
        );
        assert!(
            ImageSignatureRules::for_every_image(&[], None)
                .expect("none")
                .is_empty()
        );
    }
}
