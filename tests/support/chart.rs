//! Helm chart fixtures: charts packaged by the real `helm package` from a
//! chart directory the test writes, the gzip-compressed tars that packs (and
//! deliberately broken charts) are made of, and the helm client with its
//! configuration kept in a directory of its own.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tools;

/// The gpg user id of the key that signs test charts.
const SIGNER: &str = "Airlock Test <charts@example.com>";

/// A chart packaged with `helm package`.
#[derive(Debug, Clone)]
pub struct PackagedChart {
    pub name: String,
    pub version: String,
    /// `NAME-VERSION.tgz`, as `helm package` names it.
    pub file_name: String,
    /// The archive's bytes.
    pub bytes: Vec<u8>,
}

/// The helm client, with its config, cache and data directories in a
/// temporary directory, so tests neither read nor write the user's.
pub struct Helm {
    home: tempfile::TempDir,
}

impl Default for Helm {
    fn default() -> Self {
        Helm::new()
    }
}

impl Helm {
    pub fn new() -> Helm {
        Helm {
            home: tempfile::Builder::new()
                .prefix("airlock-helm-")
                .tempdir()
                .expect("create a temporary helm home"),
        }
    }

    /// A scratch directory inside the helm home.
    pub fn dir(&self) -> &Path {
        self.home.path()
    }

    /// `helm ARGS…` with isolated configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = tools::command("helm");
        let home = self.home.path();
        cmd.env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .args(args);
        cmd
    }

    /// Runs `helm ARGS…`, panicking unless it succeeds; returns stdout.
    pub fn run(&self, args: &[&str], what: &str) -> Vec<u8> {
        tools::run(&mut self.command(args), what).stdout
    }

    /// Writes a chart directory (Chart.yaml, values.yaml, a template and a
    /// helper) and packages it with `helm package`.
    pub fn package(&self, name: &str, version: &str, description: &str) -> PackagedChart {
        self.package_with(name, version, description, &[])
    }

    /// Like [`Helm::package`], signed with `helm package --sign` by a key
    /// made with gpg for this test: the chart, its provenance file
    /// (`<chart>.tgz.prov`) and the public keyring that verifies it.
    pub fn package_signed(
        &self,
        name: &str,
        version: &str,
        description: &str,
    ) -> (PackagedChart, Vec<u8>, PathBuf) {
        let gnupg = self.home.path().join("gnupg");
        fs::create_dir_all(&gnupg).expect("create GNUPGHOME");
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).expect("chmod GNUPGHOME");
        let gpg = |args: &[&str], what: &str| {
            tools::run(
                tools::command("gpg")
                    .env("GNUPGHOME", &gnupg)
                    .args(["--batch", "--passphrase", ""])
                    .args(args),
                what,
            )
            .stdout
        };
        gpg(
            &["--quick-gen-key", SIGNER, "rsa2048", "sign", "never"],
            "make a signing key with gpg",
        );
        let secring = gnupg.join("secring.gpg");
        let pubring = gnupg.join("pubring.export.gpg");
        fs::write(
            &secring,
            gpg(&["--export-secret-keys"], "export the secret key"),
        )
        .expect("write the secret keyring");
        fs::write(&pubring, gpg(&["--export"], "export the public key"))
            .expect("write the public keyring");
        let secring = secring.display().to_string();
        let chart = self.package_with(
            name,
            version,
            description,
            &["--sign", "--key", SIGNER, "--keyring", &secring],
        );
        let prov = fs::read(
            self.out_dir(name, version)
                .join(format!("{}.prov", chart.file_name)),
        )
        .expect("read the provenance file");
        (chart, prov, pubring)
    }

    fn out_dir(&self, name: &str, version: &str) -> PathBuf {
        self.home
            .path()
            .join("src")
            .join(format!("{name}-{version}"))
            .join("out")
    }

    fn package_with(
        &self,
        name: &str,
        version: &str,
        description: &str,
        extra: &[&str],
    ) -> PackagedChart {
        let source = self
            .home
            .path()
            .join("src")
            .join(format!("{name}-{version}"));
        let chart = source.join(name);
        fs::create_dir_all(chart.join("templates")).expect("create the chart directory");
        let chart_yaml = format!(
            "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\n\
             description: {description}\ntype: application\nhome: https://example.com/{name}\n\
             sources:\n  - https://github.com/acme/{name}\nmaintainers:\n  - name: Acme\n    \
             email: charts@example.com\nkeywords: [airlock, test]\nannotations:\n  \
             category: Testing\n"
        );
        fs::write(chart.join("Chart.yaml"), chart_yaml).expect("write Chart.yaml");
        fs::write(chart.join("values.yaml"), "replicas: 1\nmessage: hello\n")
            .expect("write values.yaml");
        fs::write(
            chart.join("templates/configmap.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"chart.fullname\" . }}\n\
             data:\n  message: {{ .Values.message | quote }}\n",
        )
        .expect("write the template");
        fs::write(
            chart.join("templates/_helpers.tpl"),
            "{{- define \"chart.fullname\" -}}{{ .Release.Name }}-{{ .Chart.Name }}{{- end }}\n",
        )
        .expect("write the helper");
        let out = self.out_dir(name, version);
        let mut args = vec![
            "package".to_owned(),
            chart.display().to_string(),
            "--destination".to_owned(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args, "package the test chart with helm");
        let file_name = format!("{name}-{version}.tgz");
        let bytes = fs::read(out.join(&file_name)).expect("read the packaged chart");
        PackagedChart {
            name: name.to_owned(),
            version: version.to_owned(),
            file_name,
            bytes,
        }
    }
}

/// A gzip-compressed tar holding `entries` (path, content) as regular files,
/// in order: a pack archive, or a chart archive made by hand.
pub fn gzip_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, *body)
            .expect("append a tar entry");
    }
    let tar = tar.into_inner().expect("finish the tar");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &tar).expect("gzip the tar");
    gzip.finish().expect("finish the gzip stream")
}

/// A pack archive `NAME/pack.json` + `NAME/values.yaml` with the given
/// charts under `NAME/charts/`.
pub fn pack_with_charts(name: &str, version: &str, charts: &[&PackagedChart]) -> Vec<u8> {
    let pack_json = format!(r#"{{"name":"{name}","version":"{version}","layer":"addon"}}"#);
    let paths: Vec<String> = charts
        .iter()
        .map(|c| format!("{name}/charts/{}", c.file_name))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = Vec::new();
    let pack_json_path = format!("{name}/pack.json");
    let values_path = format!("{name}/values.yaml");
    entries.push((&pack_json_path, pack_json.as_bytes()));
    entries.push((&values_path, b"pack:\n  namespace: test\n"));
    for (path, chart) in paths.iter().zip(charts) {
        entries.push((path, &chart.bytes));
    }
    gzip_tar(&entries)
}
