//! Service files: what `gridwork service create` reads. A service is a long-running HTTP
//! server (a model endpoint) served by a council of providers; the file names the server
//! (`[program]`, as in a job file: a command or an image), its inputs (`[data]`), the
//! hardware it needs (`[requirements]`), and in `[service]` how requests are answered and
//! paid. `docs/service.example.toml` documents every field.

use std::path::Path;

use gridwork_types::{
    Amount, Equivalence, Program, PublicKey, Requirements, ResponseMethod, ServiceSpec, StreamPrice,
};
use serde::Deserialize;

use crate::jobfile::{
    equivalence_of, inputs_of, program_of, RawData, RawEquivalence, RawProgram, RawRequirements,
};
use crate::{JobFileError, JobInput};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceFile {
    deposit: Option<String>,
    #[serde(default)]
    data: Option<RawData>,
    program: RawProgram,
    #[serde(default)]
    requirements: RawRequirements,
    service: RawService,
    /// When two members' answers agree (exact when absent).
    equivalence: Option<RawEquivalence>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    method: String,
    weight: Option<f64>,
    council_size: u8,
    max_price_per_response: String,
    #[serde(default)]
    max_price_per_byte: Option<String>,
    max_response_s: u64,
    #[serde(default)]
    response_ms_per_kib: u64,
    #[serde(default)]
    max_downtime_s: u64,
    max_unsettled: String,
    gateway: Option<String>,
}

/// A parsed service file.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    /// The service, with `data` empty until the inputs are pushed.
    pub spec: ServiceSpec,
    /// The inputs, each with where it lands.
    pub inputs: Vec<JobInput>,
    /// The deposit, if the file sets one (otherwise the service's reserve).
    pub deposit: Option<Amount>,
}

impl ServiceFile {
    /// Reads and checks a service file; without a gateway key in it, `creator`'s signs the
    /// receipts.
    pub fn read(path: &Path, creator: PublicKey) -> Result<ServiceFile, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        ServiceFile::parse(&text, &path.display().to_string(), base, creator)
    }

    /// Parses service-file text; `name` labels errors; relative input paths are joined to
    /// `base`. Without a gateway key in the file, the spec's is `creator`'s.
    pub fn parse(
        text: &str,
        name: &str,
        base: &Path,
        creator: PublicKey,
    ) -> Result<ServiceFile, JobFileError> {
        let raw: RawServiceFile = toml::from_str(text).map_err(|e| JobFileError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let field = |field: &'static str, problem: String| JobFileError::Field {
            path: name.to_string(),
            field,
            problem,
        };
        let amount =
            |f: &'static str, s: &str| Amount::parse_grid(s).map_err(|e| field(f, e.to_string()));
        let s = raw.service;
        let method = match (s.method.as_str(), s.weight) {
            ("optimistic", None) => ResponseMethod::Optimistic {},
            ("unanimous", None) => ResponseMethod::Unanimous {},
            ("weighted", Some(w)) => {
                let bps = w * 10_000.0;
                if !(w.is_finite() && w > 0.0 && w <= 1.0) || (bps - bps.round()).abs() > 1e-6 {
                    return Err(field(
                        "service.weight",
                        format!("is {w}; a share of the council above 0 and at most 1, in steps of 0.0001"),
                    ));
                }
                ResponseMethod::Weighted {
                    weight_bps: bps.round() as u16,
                }
            }
            ("weighted", None) => {
                return Err(field(
                    "service.weight",
                    "is missing: the share of the council a weighted answer waits for (0.5: half)"
                        .into(),
                ))
            }
            ("optimistic" | "unanimous", Some(_)) => {
                return Err(field(
                    "service.weight",
                    format!("is for method = \"weighted\", not \"{}\"", s.method),
                ))
            }
            (other, _) => {
                return Err(field(
                    "service.method",
                    format!("is `{other}`; use `optimistic`, `weighted` or `unanimous`"),
                ))
            }
        };
        let secs = |f: &'static str, v: u64| {
            v.checked_mul(1000)
                .ok_or_else(|| field(f, "is too large".into()))
        };
        let gateway = s
            .gateway
            .as_deref()
            .map(|g| {
                g.parse::<PublicKey>().map_err(|e| {
                    field(
                        "service.gateway",
                        format!("`{g}`: {e}; give the public key (64 hex digits, `gridwork keys list` shows it) of the key your gateway signs receipts with"),
                    )
                })
            })
            .transpose()?;
        let mut requirements = raw.requirements;
        let program: Program = program_of(raw.program, &mut requirements, name)?;
        let requirements: Requirements = requirements.into_requirements();
        let inputs = inputs_of(
            raw.data.map(|d| d.inputs).unwrap_or_default(),
            &crate::jobfile::distinct_images(&program),
            base,
            name,
            "data.inputs",
        )?;
        let deposit = match &raw.deposit {
            Some(d) if d != "auto" => Some(amount("deposit", d)?),
            _ => None,
        };
        let spec = ServiceSpec {
            program,
            data: Vec::new(),
            requirements,
            method,
            council_size: s.council_size,
            max_price: StreamPrice {
                per_response: amount("service.max_price_per_response", &s.max_price_per_response)?,
                per_unit: match &s.max_price_per_byte {
                    Some(p) => amount("service.max_price_per_byte", p)?,
                    None => Amount::ZERO,
                },
            },
            equivalence: match raw.equivalence {
                Some(e) => equivalence_of(e, name)?,
                None => Equivalence::ExactHash {},
            },
            max_response_ms: secs("service.max_response_s", s.max_response_s)?,
            response_ms_per_kib: s.response_ms_per_kib,
            max_downtime_ms: secs("service.max_downtime_s", s.max_downtime_s)?,
            max_unsettled: amount("service.max_unsettled", &s.max_unsettled)?,
            gateway: gateway.unwrap_or(creator),
        };
        Ok(ServiceFile {
            spec,
            inputs,
            deposit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creator() -> PublicKey {
        gridwork_types::Keypair::from_seed([3; 32]).public()
    }

    const FILE: &str = r#"
[program]
command = "python3"
args = ["inputs/serve.py"]

[data]
inputs = ["serve.py"]

[requirements]
min_memory_mib = 512

[service]
method = "weighted"
weight = 0.5
council_size = 3
max_price_per_response = "0.001"
max_price_per_byte = "0.000001"
max_response_s = 30
response_ms_per_kib = 50
max_downtime_s = 3600
max_unsettled = "1"
"#;

    #[test]
    fn parses_a_service_file_into_ledger_units() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.py"), "print()\n").unwrap();
        let f = ServiceFile::parse(FILE, "svc.toml", dir.path(), creator()).unwrap();
        assert_eq!(
            f.spec.method,
            ResponseMethod::Weighted { weight_bps: 5_000 }
        );
        assert_eq!(f.spec.council_size, 3);
        assert_eq!(
            f.spec.max_price.per_response,
            Amount::parse_grid("0.001").unwrap()
        );
        assert_eq!(f.spec.max_response_ms, 30_000);
        assert_eq!(f.spec.max_downtime_ms, 3_600_000);
        assert_eq!(f.spec.requirements.min_memory_mib, 512);
        // The program a service runs is software it needs, as for a job.
        assert_eq!(f.spec.requirements.software, ["python3"]);
        assert_eq!(f.inputs.len(), 1);
        assert_eq!(f.spec.gateway, creator());
        assert_eq!(f.deposit, None);
        assert_eq!(f.spec.equivalence, Equivalence::ExactHash {});
        // Answers compared within a tolerance, as a job's outputs are.
        let text = format!("{FILE}\n[equivalence]\nkind = \"numeric_tolerance\"\nrel = 1e-5\n");
        let f = ServiceFile::parse(&text, "svc.toml", dir.path(), creator()).unwrap();
        assert_eq!(
            f.spec.equivalence,
            Equivalence::NumericTolerance {
                abs_ppb: 0,
                rel_ppb: 10_000
            }
        );
        let text = format!("{FILE}\n[equivalence]\nkind = \"close\"\n");
        let e = ServiceFile::parse(&text, "svc.toml", dir.path(), creator()).unwrap_err();
        assert!(e.to_string().contains("equivalence.kind"), "{e}");
    }

    #[test]
    fn names_the_bad_field_and_what_would_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serve.py"), "print()\n").unwrap();
        for (from, to, field) in [
            (
                "method = \"weighted\"",
                "method = \"fastest\"",
                "service.method",
            ),
            ("weight = 0.5", "weight = 1.5", "service.weight"),
            (
                "method = \"weighted\"",
                "method = \"unanimous\"",
                "service.weight",
            ),
            (
                "max_unsettled = \"1\"",
                "max_unsettled = \"lots\"",
                "service.max_unsettled",
            ),
            (
                "inputs = [\"serve.py\"]",
                "inputs = [\"missing.py\"]",
                "data.inputs",
            ),
        ] {
            let text = FILE.replace(from, to);
            let e = ServiceFile::parse(&text, "svc.toml", dir.path(), creator()).unwrap_err();
            assert!(
                matches!(&e, JobFileError::Field { field: f, .. } if *f == field),
                "{field}: {e}"
            );
        }
        let text = FILE.replace("[service]", "[service]\ngateway = \"not a key\"");
        let e = ServiceFile::parse(&text, "svc.toml", dir.path(), creator()).unwrap_err();
        assert!(e.to_string().contains("service.gateway"), "{e}");
    }

    #[test]
    fn the_documented_example_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let f = ServiceFile::read(&root.join("docs/service.example.toml"), creator()).unwrap();
        assert_eq!(f.spec.council_size, 3);
    }
}
