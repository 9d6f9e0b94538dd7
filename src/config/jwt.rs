//! The JWT settings: the pinned algorithm, its key (an HS secret, directly or from a
//! file, or a PEM public key), issuer, audience and leeway.

use super::*;

pub(super) fn parse_jwt(s: &Settings) -> Result<JwtConfig, ConfigError> {
    use jsonwebtoken::Algorithm::*;
    let name = s.jwt_algorithm.as_deref().unwrap_or(DEFAULT_JWT_ALGORITHM);
    let algorithm: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
        bad(
            "NOTIFD_JWT_ALGORITHM",
            format!("unknown algorithm {name:?}"),
        )
    })?;
    let key = match algorithm {
        HS256 | HS384 | HS512 => JwtKey::Secret(read_secret(s)?),
        _ => {
            let path = s
                .jwt_public_key_file
                .as_deref()
                .ok_or_else(|| bad("NOTIFD_JWT_PUBLIC_KEY_FILE", format!("required for {name}")))?;
            let pem = std::fs::read(path).map_err(|e| {
                bad(
                    "NOTIFD_JWT_PUBLIC_KEY_FILE",
                    format!("cannot read {path}: {e}"),
                )
            })?;
            JwtKey::PublicKeyPem(pem)
        }
    };
    let config = JwtConfig {
        algorithm,
        key,
        issuer: s.jwt_issuer.clone().filter(|v| !v.is_empty()),
        audience: s.jwt_audience.clone().filter(|v| !v.is_empty()),
        leeway: match &s.jwt_leeway {
            Some(text) => parse_duration(text).map_err(|p| bad("NOTIFD_JWT_LEEWAY", p))?,
            None => DEFAULT_JWT_LEEWAY,
        },
    };
    // Build the verifier once now so a key that does not parse stops start-up here.
    crate::auth::Verifier::new(&config).map_err(|problem| {
        let variable = match config.key {
            JwtKey::Secret(_) => "NOTIFD_JWT_SECRET",
            JwtKey::PublicKeyPem(_) => "NOTIFD_JWT_PUBLIC_KEY_FILE",
        };
        bad(variable, problem)
    })?;
    Ok(config)
}

pub(super) fn read_secret(s: &Settings) -> Result<Vec<u8>, ConfigError> {
    let (secret, variable) = value_or_file(
        ("NOTIFD_JWT_SECRET", &s.jwt_secret),
        ("NOTIFD_JWT_SECRET_FILE", &s.jwt_secret_file),
    )?
    .ok_or_else(|| {
        bad(
            "NOTIFD_JWT_SECRET",
            "required for HS* algorithms (or set NOTIFD_JWT_SECRET_FILE)",
        )
    })?;
    if secret.len() < 16 {
        return Err(bad(variable, "too short: use at least 16 bytes"));
    }
    Ok(secret.into_bytes())
}
