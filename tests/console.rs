//! The console at `/`, loaded by Debian's headless Chromium (driven over the
//! DevTools protocol by `support/console.mjs`) from a real daemon after real
//! imports into the real registry: what it shows, what its filters leave,
//! what it requests, how it reads with a keyboard and to axe-core, and who
//! may open it. Screenshots land in `target/console-screenshots/`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::bundle::{BuiltBundle, BundleBuilder, Image, Layer};
use support::daemon::{Daemon, Site};
use support::keys::{KeyKind, TestKey};
use support::pack::PackFixture;
use support::proxy::{Proxy, ProxyRules, Release};
use support::registry::Registry;
use support::{skopeo, tools};

const APP: &str = "quay.io/acme/app:1.0";
const WEB: &str = "quay.io/acme/web:2.1";
const DB: &str = "quay.io/acme/db:3.0";
const ABSENT: &str = "quay.io/acme/absent:9.9";
/// The longest one Chromium run may take.
const BROWSER_LIMIT: Duration = Duration::from_secs(120);

fn image_bundle(key: &TestKey) -> BuiltBundle {
    BundleBuilder::new("app-images")
        .image(Image::new(APP))
        .image(Image::new(WEB))
        .build(key)
}

/// A bundle with two packs: nginx declares an image the bundle lacks.
fn pack_bundle(key: &TestKey) -> BuiltBundle {
    let nginx = PackFixture::new("nginx", "1.2.0")
        .layer("addon")
        .cloud_types(&["aws", "vsphere"])
        .architecture("amd64,arm64")
        .image(DB)
        .image(ABSENT);
    let cilium = PackFixture::new("cni-cilium", "1.15.3")
        .layer("cni")
        .cloud_types(&["all"])
        .architecture("amd64")
        .fips(true);
    let mut builder = BundleBuilder::new("palette-packs").image(Image::new(DB));
    for pack in [&nginx, &cilium] {
        builder = builder.file(&pack.bundle_path(), &pack.archive());
    }
    builder.build(key)
}

/// A bundle whose bytes no longer match its signature, under a name that
/// would be markup if the page parsed names as HTML.
const EVIL: &str = "evil<img src=x>";

fn rejected_bundle(key: &TestKey) -> BuiltBundle {
    let bundle = BundleBuilder::new(EVIL)
        .image(Image::new("quay.io/acme/evil:6.6"))
        .build(key);
    bundle.tamper();
    bundle
}

/// Drops `bundles` and waits until the daemon holds `records` settled
/// records.
fn import_all(site: &Site, daemon: &Daemon, bundles: &[&BuiltBundle], records: usize) {
    for bundle in bundles {
        bundle.copy_into(site.drop.path());
    }
    daemon.wait_until("every bundle to be settled", |d| {
        let imports = d.imports();
        imports.as_array().is_some_and(|all| {
            all.len() == records
                && all.iter().all(|r| {
                    ["imported", "rejected", "partial"]
                        .contains(&r["status"].as_str().unwrap_or(""))
                })
        })
    });
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
    dir
}

fn axe_script() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/axe/node_modules/axe-core/axe.min.js");
    assert!(
        path.is_file(),
        "axe-core is missing at {}: run scripts/test, which installs it with npm",
        path.display()
    );
    path
}

/// Runs `steps` in one headless Chromium and returns what the driver saw.
fn browse(daemon_url: &str, authorization: Option<&str>, steps: Vec<Value>) -> Value {
    let plan = json!({
        "chromium": tools::require("chromium"),
        "axe": axe_script(),
        "authorization": authorization,
        "steps": steps.into_iter().map(|mut s| {
            let path = s["url"].as_str().expect("step url").to_owned();
            s["url"] = json!(format!("{daemon_url}{path}"));
            s
        }).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/console.mjs");
    let mut child = tools::command("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    child
        .stdin
        .take()
        .expect("driver stdin")
        .write_all(plan.to_string().as_bytes())
        .expect("write the plan");
    let mut stdout = child.stdout.take().expect("driver stdout");
    let mut stderr = child.stderr.take().expect("driver stderr");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let errors = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let deadline = Instant::now() + BROWSER_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the driver") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("Chromium did not finish within {BROWSER_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().expect("driver output");
    let err = errors.join().expect("driver errors");
    assert!(
        status.success(),
        "the Chromium driver failed ({status}):\n{err}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("driver output {e}: {out}\n{err}"))
}

fn step(url: &str) -> Value {
    json!({ "url": url, "width": 1280, "height": 800 })
}

/// The first column of each row of table `id` in one step's result.
fn column(result: &Value, id: &str, column: usize) -> Vec<String> {
    result["tables"][id]
        .as_array()
        .unwrap_or_else(|| panic!("no table {id} in {result}"))
        .iter()
        .map(|row| row[column].as_str().unwrap_or("").to_owned())
        .collect()
}

fn first_line(cell: &str) -> &str {
    cell.lines().next().unwrap_or("")
}

fn id_of(daemon: &Daemon, name: &str) -> String {
    let imports = daemon.imports();
    imports
        .as_array()
        .and_then(|all| all.iter().find(|r| r["names"][0] == name))
        .and_then(|r| r["id"].as_str())
        .unwrap_or_else(|| panic!("no record named {name}: {imports}"))
        .to_owned()
}

/// GET `path` with an optional `Authorization` header: (status, head, body).
fn raw_get(port: u16, path: &str, authorization: Option<&str>) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the daemon URL")
}

#[test]
fn the_console_shows_every_bundle_pack_and_image_and_its_filters_narrow_the_lists() {
    let key = TestKey::generate(KeyKind::EcP256);
    let (images, packs, evil) = (image_bundle(&key), pack_bundle(&key), rejected_bundle(&key));
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(&site.setup(&[]), &registry, key.public_pem());
    import_all(&site, &daemon, &[&images, &packs, &evil], 3);
    let url = daemon.url();
    let packs_id = id_of(&daemon, "palette-packs.zst");
    let shots = screenshots();
    let shot = |name: &str| json!(shots.join(name));

    let (status, head, _) = raw_get(port_of(&url), "/", None);
    assert_eq!(status, 200);
    assert!(
        head.contains("content-security-policy: default-src 'self'"),
        "{head}"
    );

    let mut all_imports = step("/");
    all_imports["screenshot"] = shot("imports-1280x800.png");
    all_imports["axe"] = json!(true);
    let mut typed = step("/?view=imports");
    typed["type"] = json!({ "selector": "#imports input[name=q]", "text": "evil" });
    let mut bundle = step(&format!("/?view=bundle&id={packs_id}"));
    bundle["screenshot"] = shot("bundle-1280x800.png");
    bundle["axe"] = json!(true);
    let mut all_packs = step("/?view=packs");
    all_packs["screenshot"] = shot("packs-1280x800.png");
    all_packs["axe"] = json!(true);
    let mut all_images = step("/?view=images");
    all_images["screenshot"] = shot("images-1280x800.png");
    all_images["axe"] = json!(true);
    let mut narrow = json!({ "url": "/", "width": 420, "height": 800, "axe": true, "tabs": 7 });
    narrow["screenshot"] = shot("imports-420x800.png");
    let mut narrow_packs = json!({ "url": "/?view=packs", "width": 420, "height": 800 });
    narrow_packs["screenshot"] = shot("packs-420x800.png");
    let seen = browse(
        &url,
        None,
        vec![
            all_imports,
            step("/?view=imports&status=rejected"),
            typed,
            bundle,
            all_packs,
            step("/?view=packs&layer=cni"),
            step("/?view=packs&fips=false&q=ngi"),
            all_images,
            step("/?view=images&q=web"),
            narrow,
            narrow_packs,
        ],
    );
    // Everything the browser saw, axe-core's findings of every impact
    // included, beside the screenshots for people to read.
    std::fs::write(
        shots.join("report.json"),
        serde_json::to_string_pretty(&seen).expect("JSON"),
    )
    .expect("write report.json");
    let results = seen["results"].as_array().expect("results");
    let [
        imports,
        rejected,
        typed,
        bundle,
        packs_view,
        cni,
        not_fips,
        images_view,
        web,
        narrow,
        _,
    ] = results.as_slice()
    else {
        panic!("eleven results expected: {seen}");
    };

    // Imports: every bundle, newest first, with status and reason.
    let names: Vec<String> = column(imports, "imports-table", 0)
        .iter()
        .map(|c| first_line(c).to_owned())
        .collect();
    let evil_name = format!("{EVIL}.zst");
    for name in ["app-images.zst", "palette-packs.zst", evil_name.as_str()] {
        assert!(
            names.contains(&name.to_owned()),
            "{name} not shown: {names:?}"
        );
    }
    let statuses = column(imports, "imports-table", 1);
    assert_eq!(
        statuses.iter().filter(|s| *s == "imported").count(),
        2,
        "{statuses:?}"
    );
    assert!(
        imports["text"]
            .as_str()
            .unwrap_or("")
            .contains("does not verify")
    );
    // Filters narrow the list: by status from the URL, by text as typed.
    let rejected_names = column(rejected, "imports-table", 0);
    assert_eq!(rejected_names.len(), 1, "{rejected_names:?}");
    assert!(rejected_names[0].starts_with(&evil_name));
    assert_eq!(column(typed, "imports-table", 0).len(), 1, "{typed}");
    assert_eq!(typed["location"], "?view=imports&q=evil");

    // A bundle's own view: its image, its packs and what they lack.
    let targets = column(bundle, "bundle-images", 1);
    assert_eq!(targets, [format!("{}/mirror/{DB}", registry.host())]);
    let digest = skopeo::manifest_digest(&registry, &format!("mirror/{DB}"));
    assert_eq!(column(bundle, "bundle-images", 2), [digest]);
    let bundle_packs = column(bundle, "bundle-packs", 0);
    assert_eq!(bundle_packs, ["nginx", "cni-cilium"]);
    assert_eq!(column(bundle, "bundle-packs", 3), [ABSENT, "none"]);

    // Packs: both, with metadata and the image nginx lacks; filters narrow.
    let pack_names: Vec<String> = column(packs_view, "packs-table", 0)
        .iter()
        .map(|c| first_line(c).to_owned())
        .collect();
    assert_eq!(pack_names, ["cni-cilium", "nginx"]);
    assert_eq!(column(packs_view, "packs-table", 6), ["none", ABSENT]);
    assert_eq!(column(packs_view, "packs-table", 2), ["cni", "addon"]);
    assert_eq!(column(cni, "packs-table", 0).len(), 1, "{cni}");
    assert!(column(cni, "packs-table", 0)[0].starts_with("cni-cilium"));
    assert_eq!(column(not_fips, "packs-table", 0).len(), 1, "{not_fips}");
    assert!(column(not_fips, "packs-table", 0)[0].starts_with("nginx"));

    // Images: every repository and tag in the target with its digest, as
    // skopeo reads it; search narrows.
    let repositories = column(images_view, "images-table", 0);
    for reference in [APP, WEB, DB] {
        let (repository, tag) = reference.rsplit_once(':').expect("tag");
        let repository = format!("mirror/{repository}");
        let row = repositories
            .iter()
            .position(|r| *r == repository)
            .unwrap_or_else(|| panic!("{repository} not listed: {repositories:?}"));
        assert_eq!(column(images_view, "images-table", 1)[row], tag);
        assert_eq!(
            column(images_view, "images-table", 2)[row],
            skopeo::manifest_digest(&registry, &format!("mirror/{reference}"))
        );
    }
    assert!(!repositories.iter().any(|r| r.contains("evil")));
    // The API behind the view pages through the repositories.
    let page = |query: &str| -> Value {
        let (status, _, body) = raw_get(port_of(&url), &format!("/api/v1/images?{query}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("images JSON")
    };
    let names = |listing: &Value| -> Vec<String> {
        listing["repositories"]
            .as_array()
            .expect("repositories")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    };
    let everything = names(&page("limit=200"));
    let first = page("limit=2");
    assert_eq!(names(&first), everything[..2]);
    let next = first["next"].as_str().expect("a next page");
    let rest = page(&format!("limit=200&after={next}"));
    assert_eq!(names(&rest), everything[2..]);
    assert!(rest.get("next").is_none(), "{rest}");
    assert_eq!(column(web, "images-table", 0), ["mirror/quay.io/acme/web"]);

    // The keyboard reaches the views and the filters in order.
    let focus: Vec<&str> = narrow["focus"]
        .as_array()
        .expect("focus")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "a:Imports",
        "a:Packs",
        "a:Images",
        "select:status",
        "input:q",
    ] {
        assert!(
            focus.contains(&expected),
            "{expected} not reached by Tab: {focus:?}"
        );
    }

    // Nothing but the daemon was asked for anything.
    let requests: Vec<&str> = seen["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(requests.len() >= 11, "{requests:?}");
    let outside: Vec<&&str> = requests
        .iter()
        .filter(|r| !r.starts_with(&format!("{url}/")))
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside the daemon: {outside:?}"
    );

    // axe-core finds nothing, of any impact, in any view, at either width.
    for result in results.iter().filter(|r| r.get("violations").is_some()) {
        let violations = result["violations"].as_array().expect("violations");
        assert!(violations.is_empty(), "{}: {violations:#?}", result["url"]);
    }
    for name in [
        "imports-1280x800.png",
        "imports-420x800.png",
        "packs-1280x800.png",
    ] {
        let bytes = std::fs::read(shots.join(name)).expect("screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "{name} is no PNG");
    }
}

#[test]
fn an_import_under_way_shows_its_progress_and_the_page_follows_it_without_reloading() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = BundleBuilder::new("big-app")
        .image(Image::new("quay.io/acme/big:1.0").layers(&[Layer::uncompressed(7, 24 << 20)]))
        .build(&key);
    let registry = Registry::start();
    // The layer streams into the staging repository in one PATCH: holding
    // it once 8 MiB went through keeps the import running midway.
    let proxy = Proxy::start(
        &registry.host(),
        ProxyRules {
            hold_patch_after: Some(8 << 20),
            ..ProxyRules::default()
        },
    );
    let site = Site::new();
    let daemon = Daemon::start_at(&site.setup(&[]), &proxy.host(), key.public_pem());
    bundle.copy_into(site.drop.path());
    assert!(
        proxy.wait_for_hold(support::daemon::WAIT_LIMIT),
        "the upload never reached 8 MiB:\n{}",
        daemon.log_text()
    );

    let signal = site.state.path().join("page-drawn");
    let url = daemon.url();
    let mut watching = step("/");
    watching["watch"] = json!({ "signal": signal, "until": "imported" });
    let browser = std::thread::spawn(move || browse(&url, None, vec![watching]));
    let deadline = Instant::now() + BROWSER_LIMIT;
    while !signal.exists() {
        assert!(
            Instant::now() < deadline && !browser.is_finished(),
            "the page never drew"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.release(Release::Forward);
    let seen = browser.join().expect("the browser thread");

    let result = &seen["results"][0];
    let before = &result["before"];
    assert_eq!(
        column(before, "imports-table", 1),
        ["in progress"],
        "{before}"
    );
    let reason = &column(before, "imports-table", 7)[0];
    assert!(reason.starts_with("uploading, "), "{reason}");
    assert!(reason.contains("% of 24.0 MiB"), "{reason}");
    assert_eq!(result["notReloaded"], true, "the page reloaded");
    assert_eq!(column(result, "imports-table", 1), ["imported"], "{result}");
    let document_loads = seen["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter(|r| r.as_str() == Some(&format!("{}/", daemon.url())))
        .count();
    assert_eq!(document_loads, 1);
}

#[test]
fn basic_auth_guards_the_console_and_api_while_the_probes_stay_open() {
    let key = TestKey::generate(KeyKind::EcP256);
    let registry = Registry::start();
    let site = Site::new();
    let htpasswd = site.state.path().join("htpasswd");
    let made = tools::run(
        tools::command("htpasswd").args(["-nbB", "auditor", "s3cret"]),
        "make a bcrypt htpasswd entry",
    );
    std::fs::write(&htpasswd, &made.stdout).expect("write htpasswd");
    let mut setup = site.setup(&[]);
    setup.envs.push((
        "AIRLOCK_HTTP__AUTH__HTPASSWD_FILE".to_owned(),
        htpasswd.display().to_string(),
    ));
    let daemon = Daemon::start(&setup, &registry, key.public_pem());
    let url = daemon.url();
    let port = port_of(&url);
    let good = format!("Basic {}", support::base64(b"auditor:s3cret"));
    let bad = format!("Basic {}", support::base64(b"auditor:guess"));

    for path in [
        "/",
        "/console.js",
        "/api/v1/imports",
        "/api/v1/packs",
        "/api/v1/images",
    ] {
        for authorization in [None, Some(bad.as_str())] {
            let (status, head, _) = raw_get(port, path, authorization);
            assert_eq!(status, 401, "{path} without valid credentials");
            assert!(
                head.contains("www-authenticate: basic realm=\"airlock\""),
                "{head}"
            );
        }
        let (status, _, body) = raw_get(port, path, Some(&good));
        assert_eq!(status, 200, "{path} with credentials: {body}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, body) = raw_get(port, path, None);
        assert_eq!(status, 200, "{path} must stay open: {body}");
    }

    // The page works through the guard with the credentials a browser sends.
    let bundle = image_bundle(&key);
    bundle.copy_into(site.drop.path());
    daemon.wait_until("the import", |d| {
        d.metric(r#"airlock_bundles_total{outcome="imported"}"#) >= 1.0
    });
    let seen = browse(&url, Some(&good), vec![step("/")]);
    let names = column(&seen["results"][0], "imports-table", 0);
    assert_eq!(names.len(), 1, "{seen}");
    assert!(names[0].starts_with("app-images.zst"));
}

#[test]
fn a_bundle_with_a_pack_held_back_shows_as_partial_with_what_was_held() {
    let key = TestKey::generate(KeyKind::EcP256);
    let bundle = pack_bundle(&key);
    let registry = Registry::start();
    let site = Site::new();
    let daemon = Daemon::start(
        &site.setup(&["--pack-image-policy", "fail"]),
        &registry,
        key.public_pem(),
    );
    import_all(&site, &daemon, &[&bundle], 1);
    let id = id_of(&daemon, "palette-packs.zst");
    let seen = browse(
        &daemon.url(),
        None,
        vec![
            step("/?view=imports&status=partial"),
            step(&format!("/?view=bundle&id={id}")),
        ],
    );
    let [imports, own] = seen["results"].as_array().expect("results").as_slice() else {
        panic!("two results expected: {seen}");
    };
    assert_eq!(
        column(imports, "imports-table", 1),
        ["partial"],
        "{imports}"
    );
    let reason = &column(imports, "imports-table", 7)[0];
    assert!(reason.contains("held back"), "{reason}");
    assert!(reason.contains(ABSENT), "{reason}");
    // The bundle's view says which pack was held back, and what landed.
    assert_eq!(column(own, "bundle-packs", 0), ["nginx", "cni-cilium"]);
    assert_eq!(column(own, "bundle-packs", 4), ["yes", "no"]);
    assert_eq!(column(own, "bundle-packs", 3)[0], ABSENT);
    assert_eq!(
        column(own, "bundle-images", 1),
        [format!("{}/mirror/{DB}", registry.host())]
    );
}

#[test]
fn an_htpasswd_file_with_a_weak_scheme_stops_the_daemon_at_start() {
    let site = Site::new();
    let htpasswd = site.state.path().join("htpasswd");
    std::fs::write(&htpasswd, "auditor:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").expect("write");
    let key = TestKey::generate(KeyKind::EcP256);
    let output = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["watch", "--drop-dir"])
        .arg(site.drop.path())
        .arg("--public-key")
        .arg(key.public_pem())
        .args(["--registry", "127.0.0.1:9/mirror", "--plain-http"])
        .arg("--state-dir")
        .arg(site.state.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("AIRLOCK_HTTP__AUTH__HTPASSWD_FILE", &htpasswd)
        .stdin(Stdio::null())
        .output()
        .expect("run airlock watch");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 1: expected user:bcrypt-hash (htpasswd -B)"),
        "{stderr}"
    );
}
