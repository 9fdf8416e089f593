//! The shipped NATS accounts and users (`deploy/nats/accounts.conf`) for a test server: who
//! the users are and a fresh password for each.

/// The shipped accounts and users (`deploy/nats/accounts.conf`), with a fresh password per
/// user for one server.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// (user, the environment variable its password comes from, a fresh password)
    users: Vec<(String, String, String)>,
}

/// The shipped `deploy/nats/accounts.conf`, as the servers of every deployment include it.
pub const ACCOUNTS_CONF: &str = include_str!("../../../deploy/nats/accounts.conf");

impl Accounts {
    /// Every `user:` of `ACCOUNTS_CONF` with a random password.
    pub fn generate() -> Self {
        let users = users_of(ACCOUNTS_CONF)
            .unwrap_or_else(|e| panic!("deploy/nats/accounts.conf: {e}"))
            .into_iter()
            .map(|(user, var)| {
                let password = format!("p{}", uuid::Uuid::new_v4().simple());
                (user, var, password)
            })
            .collect::<Vec<_>>();
        assert!(
            users.iter().any(|(u, _, _)| u == "admin"),
            "deploy/nats/accounts.conf defines no admin user"
        );
        Self { users }
    }

    /// The users, in the order accounts.conf names them.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.iter().map(|(u, _, _)| u.as_str())
    }

    pub fn password(&self, user: &str) -> &str {
        self.users
            .iter()
            .find(|(u, _, _)| u == user)
            .map(|(_, _, p)| p.as_str())
            .unwrap_or_else(|| panic!("deploy/nats/accounts.conf has no user {user:?}"))
    }

    /// The server's environment: each password under the variable accounts.conf reads it from.
    pub fn server_env(&self) -> Vec<(String, String)> {
        self.users
            .iter()
            .map(|(_, var, p)| (var.clone(), p.clone()))
            .collect()
    }
}

/// The users of a NATS accounts config and the environment variable each one's password comes
/// from (`password: $VAR`), in file order; an error names a user whose password is written in
/// the file instead. Comments are ignored.
pub fn users_of(conf: &str) -> Result<Vec<(String, String)>, String> {
    let conf: String = conf
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let word = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect()
    };
    let mut users = Vec::new();
    let mut rest = conf.as_str();
    while let Some(i) = rest.find("user:") {
        rest = &rest[i + "user:".len()..];
        let user = word(rest);
        let at = rest
            .find("password:")
            .ok_or_else(|| format!("user {user} has no password"))?;
        let value = rest[at + "password:".len()..].trim_start();
        let var = value.strip_prefix('$').map(word).ok_or_else(|| {
            format!(
                "the password of {user} must come from the environment ($NATS_PASSWORD_...), got {:?}",
                value.lines().next().unwrap_or("")
            )
        })?;
        users.push((user, var));
    }
    Ok(users)
}
