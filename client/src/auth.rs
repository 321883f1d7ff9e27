//! User authentication, driven by the engine's events: "none" first, then
//! the methods of PreferredAuthentications the server allows: publickey
//! (agent and files: a query, then a signature once the server would accept
//! the key), keyboard-interactive and password, with prompts on the terminal
//! or through SSH_ASKPASS.

use ressh_proto::keys::PublicKey;
use ressh_proto::Connection;

use crate::askpass::{self, Kind, PromptError};
use crate::config::Config;
use crate::identity::{self, Agent, Identity, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Idle,
    None,
    Query(usize, &'static str),
    Signed(usize),
    Kbd,
    Password,
}

pub struct Auth {
    user: String,
    host: String,
    identities: Vec<Identity>,
    agent: Option<Agent>,
    next_identity: usize,
    preferred: Vec<String>,
    allowed: Vec<String>,
    pending: Pending,
    password_tries: u32,
    kbd_tries: u32,
    max_tries: u32,
    batch: bool,
    pubkey: bool,
    password: bool,
    kbd: bool,
    accepted_algs: Option<Vec<String>>,
}

fn proto_err(e: ressh_proto::Error) -> String {
    e.to_string()
}

impl Auth {
    pub fn new(cfg: &Config, identities: Vec<Identity>, agent: Option<Agent>) -> Auth {
        let accepted_algs = cfg.pubkey_accepted_algorithms.as_ref().map(|spec| {
            let known: Vec<String> = ressh_proto::cert::all_signature_algorithms()
                .into_iter()
                .chain(ressh_proto::keys::KeyType::all_signature_algorithms())
                .map(String::from)
                .collect();
            crate::config::algorithm_list("PubkeyAcceptedAlgorithms", spec, &known, &known)
                .unwrap_or(known)
        });
        Auth {
            user: cfg.user.clone(),
            host: cfg.host.clone(),
            identities,
            agent,
            next_identity: 0,
            preferred: cfg.preferred_authentications.clone(),
            allowed: Vec::new(),
            pending: Pending::Idle,
            password_tries: 0,
            kbd_tries: 0,
            max_tries: cfg.number_of_password_prompts,
            batch: cfg.batch_mode,
            pubkey: cfg.pubkey_authentication,
            password: cfg.password_authentication,
            kbd: cfg.kbd_interactive_authentication,
            accepted_algs,
        }
    }

    /// Turns password and keyboard-interactive off (the host key changed and
    /// StrictHostKeyChecking=no let the connection go on, as ssh does).
    pub fn disable_interactive(&mut self) {
        self.password = false;
        self.kbd = false;
    }

    /// Sends the "none" request once the server accepts the auth service.
    pub fn start(&mut self, conn: &mut Connection) -> Result<(), String> {
        conn.auth_none(&self.user).map_err(proto_err)?;
        self.pending = Pending::None;
        Ok(())
    }

    fn denied(&self) -> String {
        format!(
            "{}@{}: Permission denied ({}).",
            self.user,
            self.host,
            self.allowed.join(",")
        )
    }

    /// The server refused the last attempt; `methods` can continue.
    pub fn on_failure(
        &mut self,
        conn: &mut Connection,
        methods: Vec<String>,
        partial: bool,
    ) -> Result<(), String> {
        if partial {
            crate::verbose!("Authenticated using a method with partial success.");
        }
        match self.pending {
            Pending::Password => crate::info!("Permission denied, please try again."),
            Pending::Signed(i) => crate::debug1!(
                "server refused the signature of {}",
                self.identities[i].name
            ),
            _ => {}
        }
        crate::debug1!("Authentications that can continue: {}", methods.join(","));
        self.allowed = methods;
        self.pending = Pending::Idle;
        self.next(conn)
    }

    fn next(&mut self, conn: &mut Connection) -> Result<(), String> {
        let preferred = self.preferred.clone();
        for m in &preferred {
            if !self.allowed.iter().any(|a| a == m) {
                continue;
            }
            let sent = match m.as_str() {
                "publickey" if self.pubkey => self.try_publickey(conn)?,
                "keyboard-interactive" if self.kbd && self.kbd_tries < self.max_tries => {
                    self.kbd_tries += 1;
                    crate::debug1!("Next authentication method: keyboard-interactive");
                    conn.auth_keyboard_interactive(&self.user)
                        .map_err(proto_err)?;
                    self.pending = Pending::Kbd;
                    true
                }
                "password" if self.password && self.password_tries < self.max_tries => {
                    self.password_tries += 1;
                    crate::debug1!("Next authentication method: password");
                    let prompt = format!("{}@{}'s password: ", self.user, self.host);
                    match askpass::ask(&prompt, Kind::Secret, self.batch) {
                        Ok(pw) => {
                            conn.auth_password(&self.user, &pw).map_err(proto_err)?;
                            self.pending = Pending::Password;
                            true
                        }
                        Err(PromptError::Cancelled) => {
                            self.password = false;
                            false
                        }
                        Err(PromptError::Unavailable(why)) => {
                            crate::debug1!("password prompt unavailable: {why}");
                            self.password = false;
                            false
                        }
                    }
                }
                _ => false,
            };
            if sent {
                return Ok(());
            }
        }
        Err(self.denied())
    }

    fn try_publickey(&mut self, conn: &mut Connection) -> Result<bool, String> {
        while self.next_identity < self.identities.len() {
            let i = self.next_identity;
            self.next_identity += 1;
            let id = &self.identities[i];
            let Some(alg) = identity::signature_algorithm(
                &id.public,
                id.cert.is_some(),
                conn.server_sig_algs(),
                self.accepted_algs.as_deref(),
            ) else {
                crate::debug1!("skipping {}: algorithm not accepted", id.name);
                continue;
            };
            crate::debug1!(
                "Offering public key: {} {} {} (algorithm {alg})",
                id.name,
                id.type_name(),
                id.public.fingerprint()
            );
            conn.auth_publickey_query(&self.user, alg, &id.blob())
                .map_err(proto_err)?;
            self.pending = Pending::Query(i, alg);
            return Ok(true);
        }
        Ok(false)
    }

    /// The server would accept the queried key: sign and send.
    pub fn on_pk_ok(&mut self, conn: &mut Connection) -> Result<(), String> {
        let Pending::Query(i, alg) = self.pending else {
            return Err("unexpected PK_OK from server".into());
        };
        crate::debug1!("Server accepts key: {}", self.identities[i].name);
        let public: PublicKey = self.identities[i].public.clone();
        let blob = self.identities[i].blob();
        let data = conn
            .publickey_sign_data(&self.user, alg, &blob)
            .map_err(proto_err)?;
        let sig = match &mut self.identities[i].source {
            Source::Agent { blob } => match self.agent.as_mut() {
                Some(a) => a.sign(blob, alg, &data).map_err(|e| e.to_string()),
                None => Err("agent gone".to_string()),
            },
            Source::File { path, key } => {
                if key.is_none() {
                    match identity::load_private(path, self.batch, self.max_tries) {
                        Ok(k) => *key = Some(k),
                        Err(e) => {
                            crate::info!("{e}");
                        }
                    }
                }
                match key {
                    Some(k) if k.public_key() == public => k
                        .sign(identity::plain_algorithm(alg), &data)
                        .map_err(|e| e.to_string()),
                    Some(_) => Err("private key does not match its .pub file".to_string()),
                    None => Err("key not loaded".to_string()),
                }
            }
        };
        match sig {
            Ok(sig) => {
                conn.auth_publickey_signed(&self.user, alg, &blob, sig)
                    .map_err(proto_err)?;
                self.pending = Pending::Signed(i);
                Ok(())
            }
            Err(e) => {
                crate::debug1!("signing with {} failed: {e}", self.identities[i].name);
                self.pending = Pending::Idle;
                self.next(conn)
            }
        }
    }

    /// Keyboard-interactive prompts.
    pub fn on_info_request(
        &mut self,
        conn: &mut Connection,
        name: &str,
        instruction: &str,
        prompts: &[(String, bool)],
    ) -> Result<(), String> {
        if self.pending != Pending::Kbd {
            return Err("unexpected keyboard-interactive request".into());
        }
        if !prompts.is_empty() && !self.batch {
            if !name.is_empty() {
                crate::log::raw_text(&format!("{}\n", clean(name)));
            }
            if !instruction.is_empty() {
                crate::log::raw_text(&format!("{}\n", clean(instruction)));
            }
        }
        let mut answers = Vec::new();
        for (p, echo) in prompts {
            let kind = if *echo { Kind::Echo } else { Kind::Secret };
            match askpass::ask(&clean(p), kind, self.batch) {
                Ok(a) => answers.push(a),
                Err(_) => {
                    // No way to answer: give up on this method.
                    self.kbd = false;
                    answers.clear();
                    break;
                }
            }
        }
        let refs: Vec<&str> = answers.iter().map(|a| a.as_str()).collect();
        let refs = if refs.len() == prompts.len() {
            refs
        } else {
            vec![""; prompts.len()]
        };
        conn.auth_info_response(&refs).map_err(proto_err)
    }

    /// A password change is demanded: ressh does not do that; next method.
    pub fn on_password_change(
        &mut self,
        conn: &mut Connection,
        prompt: &str,
    ) -> Result<(), String> {
        crate::info!("{}", clean(prompt));
        crate::info!("Password change required but not supported by ressh.");
        self.password = false;
        self.pending = Pending::Idle;
        self.next(conn)
    }

    /// What authenticated us, for -v.
    pub fn describe_success(&self) -> String {
        match self.pending {
            Pending::Signed(i) => format!("publickey ({})", self.identities[i].name),
            Pending::Password => "password".into(),
            Pending::Kbd => "keyboard-interactive".into(),
            Pending::None => "none".into(),
            _ => "unknown".into(),
        }
    }
}

/// Strips control characters from server-supplied text (keeps newlines/tabs).
pub fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_escapes() {
        assert_eq!(clean("a\x1b[2Jb\nc\r"), "a[2Jb\nc");
    }
}
