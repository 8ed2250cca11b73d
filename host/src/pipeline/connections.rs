//! A pipeline's connections: opened in the sandbox from their `.ionapi`
//! files, and the grants this process holds for them while it runs.

use super::*;

impl Pipeline {
    /// Reads each connection's `.ionapi` JSON and opens it in the sandbox.
    /// No network call happens here.
    pub async fn open_connections(
        &self,
        runtime: &Runtime,
    ) -> anyhow::Result<BTreeMap<String, Arc<Connection>>> {
        let mut open = BTreeMap::new();
        for name in self.config.connections.keys() {
            open.insert(name.clone(), self.open_connection(runtime, name).await?);
        }
        Ok(open)
    }

    /// Reads `[connections.NAME]`'s `.ionapi` JSON and opens it in the
    /// sandbox, which checks the file; no network call happens here.
    pub async fn open_connection(
        &self,
        runtime: &Runtime,
        name: &str,
    ) -> anyhow::Result<Arc<Connection>> {
        let conn = self.config.connections.get(name).ok_or_else(|| {
            ConfigError::new(&self.file, format!("defines no connection `{name}`"))
        })?;
        let resolved = self.connection(name)?;
        let connector = match &conn.connector {
            Some(raw) => {
                let path = self.base_dir.join(self.vars.expand(raw).map_err(|e| {
                    ConfigError::new(&self.file, format!("connections.{name}.connector: {e}"))
                })?);
                runtime.load_connector_file(&path).with_context(|| {
                    format!("{}: connections.{name}.connector", self.file.display())
                })?
            }
            None => runtime.default_connector().clone(),
        };
        let mut connection = runtime
            .open_with(
                &connector,
                name,
                resolved.ionapi_json.expose(),
                resolved.options,
                self.instances_for(name),
            )
            .await
            .with_context(|| format!("connection `{name}` ({})", resolved.source))?;
        let limit = match conn.rate_limit {
            Some(limit) => RateLimit {
                requests: limit.requests,
                window: Duration::from_secs(limit.window_secs.into()),
                smoothing: limit.smoothing,
            },
            None => RateLimit::default(),
        };
        // Workers on one shared store draw from one budget per connection:
        // the gateway's quota is the tenant's, not a process's.
        match self.shared_state.as_ref().and_then(|s| s.rate_budget()) {
            Some(budget) => connection.set_shared_rate_limit(limit, budget),
            None => connection.set_rate_limit(limit),
        }
        Ok(Arc::new(connection))
    }

    /// Where `[connections.NAME]`'s credentials would come from, when they
    /// are not there: `validate` checks a pipeline without them.
    pub fn missing_credentials(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(conn) = self.config.connections.get(name) else {
            return Ok(None);
        };
        let key = format!("connections.{name}");
        if let Some(var) = &conn.ionapi_env
            && std::env::var_os(var).is_none()
        {
            return Ok(Some(format!(
                "{key}.ionapi_env: {var} is not set here; checked without the credentials (a run needs them)"
            )));
        }
        if let Some(raw) = &conn.ionapi_file {
            let expanded = self
                .vars
                .expand(raw)
                .map_err(|e| ConfigError::new(&self.file, format!("{key}.ionapi_file: {e}")))?;
            let path = self.base_dir.join(expanded);
            if !path.exists() {
                return Ok(Some(format!(
                    "{key}.ionapi_file: {} is not there; checked without the credentials (a run needs them)",
                    path.display()
                )));
            }
        }
        if let Some(var) = &conn.saml_assertion_env
            && std::env::var_os(var).is_none()
        {
            return Ok(Some(format!(
                "{key}.saml_assertion_env: {var} is not set here; checked without the assertion"
            )));
        }
        if let Some(raw) = &conn.saml_assertion_file
            && let Ok(expanded) = self.vars.expand(raw)
            && !self.base_dir.join(&expanded).exists()
        {
            return Ok(Some(format!(
                "{key}.saml_assertion_file: {expanded} is not there; checked without the assertion"
            )));
        }
        Ok(None)
    }

    /// One connector instance per request a sink of this connection may
    /// have in flight: an instance serves one call at a time.
    pub(super) fn instances_for(&self, connection: &str) -> usize {
        let source = self.config.source.spec();
        let source = match source.connection() {
            Some(name) if name == connection => source.concurrency(),
            _ => 1,
        };
        self.config
            .sinks
            .iter()
            .filter_map(|s| s.spec().delivery())
            .filter(|d| d.connection == Some(connection))
            .map(|d| d.concurrency)
            .fold(source, u32::max)
            .clamp(1, MAX_CONCURRENCY) as usize
    }

    /// The credentials and options of `[connections.NAME]`.
    pub fn connection(&self, name: &str) -> Result<ResolvedConnection, ConfigError> {
        let config = self.config.connections.get(name).ok_or_else(|| {
            ConfigError::new(&self.file, format!("defines no connection `{name}`"))
        })?;
        credentials::from_pipeline(name, config, &self.file, &self.base_dir, &self.vars)
    }

    pub fn state_path(&self) -> Option<PathBuf> {
        let state = self.config.state.as_ref()?;
        Some(match &state.path {
            Some(p) => self.base_dir.join(p),
            None => self
                .base_dir
                .join(".ionflow/state")
                .join(format!("{}.json", self.name)),
        })
    }

    /// Holds the grant of each of `connections` for this process, each
    /// with its connection's wish for the end (`revoke_on_exit`, as a
    /// `daemon` or a one-shot run reads it). On failure nothing stays held.
    pub async fn hold_grants(
        &self,
        grants: &Grants,
        connections: &BTreeMap<String, Arc<Connection>>,
        daemon: bool,
    ) -> anyhow::Result<Vec<HeldGrant>> {
        let mut held = Vec::new();
        for (name, connection) in connections {
            let config = &self.config.connections[name];
            let wait = crate::grants::join_wait(config.timeout_secs);
            if let Err(e) = grants
                .hold(connection, config.revokes_on_exit(daemon), wait)
                .await
            {
                self.release_grants(grants, &held, &BTreeMap::new()).await;
                return Err(anyhow::Error::new(e)
                    .context(format!("connection `{name}`: holding its grant")));
            }
            held.push(HeldGrant {
                key: crate::grants::key(connection).to_owned(),
                connection: name.clone(),
            });
        }
        Ok(held)
    }

    /// Lets go of grants held by `hold_grants`; a grant this process holds
    /// last and was asked to revoke is revoked through its connection in
    /// `connections` (and kept when that is missing).
    pub async fn release_grants(
        &self,
        grants: &Grants,
        held: &[HeldGrant],
        connections: &BTreeMap<String, Arc<Connection>>,
    ) {
        for grant in held {
            let via = connections
                .get(&grant.connection)
                .filter(|c| crate::grants::key(c) == grant.key);
            grants.release(&grant.key, via.map(Arc::as_ref)).await;
        }
    }
}
