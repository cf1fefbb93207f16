mod support;
use support::registry::*;

#[test]
fn probe_rustls() {
    let reg = Registry::start_with(RegistryOptions::default().with_tls().with_basic_auth("u", "p"));
    let ca = std::fs::read(reg.ca_cert_path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .build()
            .unwrap();
        let r = client.get(format!("{}/v2/_catalog", reg.url())).basic_auth("u", Some("p")).send().await;
        println!("{:?}", r.map(|r| r.status()));
    });
}
