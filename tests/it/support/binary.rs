//! The real `finaz-freeswitch` binary as an operator runs it: start on a config, wait until
//! it answers, signal it, read what it logged.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_finaz-freeswitch");

/// A free TCP port on 127.0.0.1 (for configs the binary binds itself), never handed out twice
/// by this process. Chosen below the kernel's ephemeral range (32768-60999 here): a port
/// from `bind(":0")` was free again the moment it was dropped, and the many listeners the
/// tests bind on port 0 could take it before the binary did (a binary that could not bind
/// its port never answered, and the test timed out after 10 s).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = fastrand::u16(20_000..32_000);
        let mut given = GIVEN.lock().unwrap();
        if given.get_or_insert_with(HashSet::new).contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.as_mut().unwrap().insert(port);
            return port;
        }
    }
}

pub struct Running {
    child: Child,
}

impl Running {
    /// `finaz-freeswitch ARGS --config FILE` with extra environment; stderr kept.
    pub fn spawn(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Running {
        Self::start(Command::new(BIN), args, config, env)
    }

    fn start(mut cmd: Command, args: &[&str], config: &Path, env: &[(&str, &str)]) -> Running {
        let child = cmd
            .args(args)
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Running { child }
    }

    /// Like [`Running::spawn`], under a descriptor limit of `limit` (soft and hard), as a
    /// service manager with a low `LimitNOFILE` would start it.
    pub fn spawn_with_nofile(
        limit: u64,
        args: &[&str],
        config: &Path,
        env: &[(&str, &str)],
    ) -> Running {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(BIN);
        Self::start(sh, args, config, env)
    }

    /// Panics with the process's log if it has already exited (a port it could not bind, a
    /// bad config), instead of waiting out a timeout.
    async fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the binary exited ({status}): {}", self.logs().await);
        }
    }

    /// Waits until the admin listener on `admin` says ready (200 on /readyz).
    pub async fn wait_ready(&mut self, admin: u16) {
        let url = format!("http://127.0.0.1:{admin}/readyz");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if super::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            self.assert_alive().await;
            assert!(Instant::now() < deadline, "{url} never said ready");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Waits until `url` answers at all (any status).
    pub async fn wait_answering(&mut self, url: &str) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = super::get(url).await {
                return r;
            }
            self.assert_alive().await;
            assert!(Instant::now() < deadline, "{url} never answered");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits for the exit; true on exit code 0.
    pub async fn signal(&mut self, signal: &str) -> bool {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the process ends")
            .unwrap()
            .success()
    }

    /// Everything it wrote on stderr (call after it ended).
    pub async fn logs(&mut self) -> String {
        let mut logs = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut logs).await.unwrap();
        }
        logs
    }
}
