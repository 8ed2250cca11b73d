//! One run of a pipeline: pages from the source, through the transforms,
//! to the sinks in input order; the summary, the dead letter and the
//! watermarks it leaves.

use tracing::Instrument as _;

use super::progress::Progress;
use super::*;

impl Pipeline {
    /// The first `limit` records of the source, as a run would read them
    /// (with its saved watermarks), and the jq variables a run would have:
    /// `ionflow jq --from`.
    pub async fn sample(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        limit: u64,
    ) -> anyhow::Result<(Vec<Value>, JqGlobals)> {
        let connections = self.open_connections(runtime).await?;
        let held = self.hold_grants(grants, &connections, false).await?;
        let state = match &self.config.state {
            Some(_) => self.stored_watermarks().await?.values(),
            None => BTreeMap::new(),
        };
        let vars = self.vars.clone().with_state(state);
        let globals = self.jq_globals(&vars, &RunOptions::default());
        let http = http::HttpClient::new(runtime.limits().response_bytes);
        let read = async {
            let mut source = self.config.source.spec().open(SourceContext {
                connections: &connections,
                vars: &vars,
                base_dir: &self.base_dir,
                http: &http,
                stats: Arc::new(RunStats::default()),
            })?;
            let mut records = Vec::new();
            while (records.len() as u64) < limit
                && let Some(page) = source.next_page().await?
            {
                records.extend(page);
            }
            records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            anyhow::Ok(records)
        };
        let records = read.await;
        self.release_grants(grants, &held, &connections).await;
        Ok((records?, globals))
    }

    /// Templates and sink plans with `${...}` expanded for one run.
    pub(super) fn prepare_sinks(
        &self,
        vars: &Variables,
    ) -> anyhow::Result<(Scope, Vec<Box<dyn SinkPlan>>)> {
        let templates = self
            .templates
            .expanded(vars)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let plans = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.expand(vars)
                    .map_err(|e| anyhow::anyhow!("sinks[{i}]: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            Scope {
                templates: Arc::new(templates),
                vars: vars.vars().clone(),
                state: vars.state().clone(),
            },
            plans,
        ))
    }

    /// Runs a record through every transform: zero, one or many records out
    /// (`ionflow test`; a run transforms whole pages, see `stage`).
    pub(super) fn transform(
        &self,
        record: &Value,
        globals: &JqGlobals,
    ) -> Result<Vec<Value>, TransformFailure> {
        if self.transforms.is_empty() {
            return Ok(vec![record.clone()]);
        }
        match stage::run_one(&self.transforms, record.clone(), globals) {
            stage::Outcome::Records(outputs) => Ok(outputs),
            stage::Outcome::Failed { stage, error } => Err(TransformFailure { stage, error }),
            stage::Outcome::Text { .. } | stage::Outcome::BadLine(_) => Err(TransformFailure {
                stage: "transforms".into(),
                error: "the transform gave no records".into(),
            }),
        }
    }

    /// Writes a transformed page to the sinks in input order, and its
    /// failed records to the dead letter.
    pub(super) async fn deliver(
        &self,
        done: stage::Done,
        sinks: &mut [Box<dyn SinkWriter>],
        outcome: &mut Outcome,
        summary: &mut Summary,
        dead_letter: &mut Option<DeadLetter>,
        watermarks: &mut Option<Watermarks>,
    ) -> anyhow::Result<()> {
        // A line that is not JSON stops the run before any record of its
        // page is written, as when pages were parsed as they were read.
        if let Page::Lines(lines) = &*done.page
            && let Some((i, error)) = done.outcomes.iter().enumerate().find_map(|(i, o)| match o {
                stage::Outcome::BadLine(e) => Some((i, e)),
                _ => None,
            })
        {
            return Err(anyhow::anyhow!("{error}").context(format!(
                "{}:{}: not a JSON document; JSON Lines files hold one document per line",
                lines.path.display(),
                lines.line_number(i)
            )));
        }
        for (i, result) in done.outcomes.iter().enumerate() {
            match result {
                stage::Outcome::Records(outputs) => {
                    for output in outputs {
                        summary.records_out += 1;
                        if let Some(w) = watermarks.as_mut() {
                            w.observe(WatermarkFrom::Output, output);
                        }
                        for (s, sink) in sinks.iter_mut().enumerate() {
                            sink.write(output, outcome).await?;
                            drain(outcome, summary, dead_letter, &self.name, s)?;
                        }
                    }
                }
                stage::Outcome::Text {
                    chunk,
                    range,
                    count,
                } => {
                    summary.records_out += *count as u64;
                    let text = done.text(*chunk, range.clone());
                    for sink in sinks.iter_mut() {
                        sink.write_json_lines(text, *count)?;
                    }
                }
                stage::Outcome::Failed { stage, error } => {
                    summary.records_failed += 1;
                    let parsed;
                    let record = match &*done.page {
                        Page::Records(records) => &records[i],
                        Page::Lines(lines) => {
                            parsed = serde_json::from_str(lines.line(i))?;
                            &parsed
                        }
                    };
                    fail(dead_letter, &self.name, stage, error, record)?;
                }
                stage::Outcome::BadLine(_) => {}
            }
        }
        Ok(())
    }

    /// Runs the pipeline once as the whole of this process's session: it
    /// holds each connection's grant while it runs and releases it at the
    /// end ([`Session::Once`]), whether the run succeeded or not.
    pub async fn run(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        show_progress: bool,
    ) -> anyhow::Result<Summary> {
        self.run_until(
            runtime,
            grants,
            Session::Once,
            show_progress,
            std::future::pending(),
        )
        .await
    }

    /// Like `run`, but stops when `stop` resolves (a signal): no output file
    /// is completed, no watermark moves, and the grants are released.
    pub async fn run_until(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        session: Session,
        show_progress: bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let options = RunOptions {
            show_progress,
            ..RunOptions::default()
        };
        self.run_with_options(runtime, grants, session, &options, stop)
            .await
    }

    /// Like `run_until`, with the options of `ionflow run`.
    pub async fn run_with_options(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        session: Session,
        options: &RunOptions,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let connections = self.open_connections(runtime).await?;
        let held = match session {
            Session::Once => self.hold_grants(grants, &connections, false).await?,
            Session::Served => Vec::new(),
        };
        let progress = Progress::new(options.show_progress, &self.name, &connections);
        // A guest call cancelled midway leaves its instance unusable, so a
        // signal first raises a flag and the run stops at the next page
        // boundary. A page that does not end within STOP_GRACE (a call
        // waiting on the rate limit, a slow gateway) is abandoned, and the
        // grants are released through fresh instances instead.
        const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let max_response_bytes = runtime.limits().response_bytes;
        let run = self.run_with(
            &connections,
            max_response_bytes,
            options,
            &progress,
            &stopping,
        );
        tokio::pin!(run, stop);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = &mut stop => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                // Said at once, so a person knows why nothing ends yet.
                progress.say(&format!(
                    "stopping: {}; the run ends at the next page boundary (at most {} s)",
                    progress.waiting_for(),
                    STOP_GRACE.as_secs()
                ));
                match tokio::time::timeout(STOP_GRACE, &mut run).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(pipeline = %self.name, "the current page did not end within {} s; abandoning it", STOP_GRACE.as_secs());
                        let fresh = self.open_connections(runtime).await.unwrap_or_else(|e| {
                            tracing::warn!("could not reopen connections to revoke; the grants are kept: {e:#}");
                            BTreeMap::new()
                        });
                        self.release_grants(grants, &held, &fresh).await;
                        return Err(Interrupted.into());
                    }
                }
            }
        };
        progress.finish();
        self.release_grants(grants, &held, &connections).await;
        let mut summary = outcome?;
        for connection in connections.values() {
            summary.api_calls += connection.stats().requests();
            summary.token_requests += connection.stats().token_requests();
        }
        Ok(summary)
    }

    pub(super) async fn run_with(
        &self,
        connections: &BTreeMap<String, Arc<Connection>>,
        max_response_bytes: u64,
        options: &RunOptions,
        progress: &Progress,
        stopping: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let stats = Arc::new(RunStats::default());
        let http = http::HttpClient::new(max_response_bytes);

        let state_path = self.state_path();
        let mut watermarks = match (&state_path, &self.config.state, &self.shared_state) {
            // Saved values are ignored and nothing is saved over them.
            (Some(_), Some(state), _) if options.full_refresh => {
                Some(Watermarks::initial(&state.watermarks))
            }
            (Some(_), Some(state), Some(storage)) => {
                let saved = storage.load_state(&self.name).await?;
                let origin = PathBuf::from(format!("{}#{}", storage.describe(), self.name));
                Some(Watermarks::from_saved(
                    saved.as_deref(),
                    &origin,
                    &state.watermarks,
                )?)
            }
            (Some(path), Some(state), None) => Some(Watermarks::load(path, &state.watermarks)?),
            _ => None,
        };
        let vars = self.vars.clone().with_state(
            watermarks
                .as_ref()
                .map(Watermarks::values)
                .unwrap_or_default(),
        );
        let (scope, plans) = self.prepare_sinks(&vars)?;
        let scope = Arc::new(scope);
        let globals = self.jq_globals(&vars, options);

        let mut source = self.config.source.spec().open(SourceContext {
            connections,
            vars: &vars,
            base_dir: &self.base_dir,
            http: &http,
            stats: stats.clone(),
        })?;
        let mut sinks: Vec<Box<dyn SinkWriter>> = plans
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                if options.dry_run {
                    return Ok(dry_run::DryRun::writer(
                        index,
                        self.config.sinks[index].kind_name(),
                        plan,
                        scope.clone(),
                    ));
                }
                plan.open(&SinkContext {
                    index,
                    connections,
                    vars: &vars,
                    base_dir: &self.base_dir,
                    http: &http,
                    stats: stats.clone(),
                    scope: scope.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut dead_letter = self
            .config
            .dead_letter
            .as_ref()
            .filter(|_| !options.dry_run)
            .map(|d| -> anyhow::Result<DeadLetter> {
                let path = vars
                    .expand(&d.path)
                    .map_err(|e| anyhow::anyhow!("dead_letter.path: {e}"))?;
                Ok(DeadLetter::new(&self.base_dir.join(path), &self.name))
            })
            .transpose()?;
        let mut summary = Summary {
            pipeline: self.name.clone(),
            ..Summary::default()
        };
        let mut outcome = Outcome::default();
        let mut remaining = options.limit;

        // Output watermarks read the records as they leave the transforms.
        let outputs_observed = watermarks.as_ref().is_some_and(Watermarks::reads_outputs);
        let stage = (!self.transforms.is_empty()).then(|| {
            let text = !outputs_observed && sinks.iter().all(|s| s.takes_json_lines());
            Stage::new(self.transforms.clone(), text, globals.clone())
        });
        // JSON Lines go to the workers as text when nothing on this thread
        // needs the records first: transforms to run, no watermarks, no
        // record limit to cut a page at.
        let mut text_pages = stage.is_some() && watermarks.is_none() && remaining.is_none();
        // The page the workers transform while this thread writes the one
        // before, with its span: the calls its sinks make nest under it.
        let mut pending: Option<(stage::Pending, tracing::Span)> = None;
        let mut pages_read = 0;
        loop {
            let (page, span) = if remaining == Some(0) {
                (None, tracing::Span::none())
            } else {
                pages_read += 1;
                let span = crate::traces::page_span(pages_read);
                let page = match text_pages
                    .then(|| span.in_scope(|| source.next_text_page()))
                    .flatten()
                {
                    Some(page) => page?.map(Page::Lines),
                    None => {
                        text_pages = false;
                        source
                            .next_page()
                            .instrument(span.clone())
                            .await?
                            .map(Page::Records)
                    }
                };
                (page, span)
            };
            let exhausted = page.is_none();
            span.record("records", 0_u64);
            let ready = match page {
                Some(mut page) => {
                    progress.page();
                    if let (Some(left), Page::Records(records)) = (&mut remaining, &mut page) {
                        records.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= records.len() as u64;
                    }
                    span.record("records", page.len() as u64);
                    summary.records_in += page.len() as u64;
                    if let (Some(w), Page::Records(records)) = (&mut watermarks, &page) {
                        for record in records {
                            w.observe(WatermarkFrom::Source, record);
                        }
                    }
                    match (&stage, page) {
                        (Some(stage), page) => pending
                            .replace((stage.submit(page), span))
                            .map(|(p, span)| (p.wait(), span)),
                        // Without transforms, records go straight to the sinks.
                        (None, Page::Records(records)) => {
                            Some((stage::Done::untransformed(records), span))
                        }
                        (None, Page::Lines(_)) => {
                            anyhow::bail!("a page of text reached a pipeline without transforms")
                        }
                    }
                }
                None => pending.take().map(|(p, span)| (p.wait(), span)),
            };
            if let Some((done, span)) = ready {
                self.deliver(
                    done,
                    &mut sinks,
                    &mut outcome,
                    &mut summary,
                    &mut dead_letter,
                    &mut watermarks,
                )
                .instrument(span)
                .await?;
                progress.update(&summary);
            }
            // Checked between pages, never inside a guest call.
            if stopping.load(Ordering::SeqCst) {
                // Requests already sent finish, so each record's outcome is known.
                for (i, sink) in sinks.iter_mut().enumerate() {
                    sink.settle(&mut outcome).await?;
                    drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
                }
                return Err(Interrupted.into());
            }
            if exhausted && pending.is_none() {
                break;
            }
        }
        for (i, sink) in sinks.into_iter().enumerate() {
            let finished = sink.finish(&mut outcome).await?;
            drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
            if let Some(note) = finished.note {
                tracing::info!(pipeline = %self.name, "{note}");
                summary.notes.push(note);
            }
            if let Some(path) = finished.output {
                summary.outputs.push(path);
            }
        }
        if let Some(dl) = dead_letter {
            summary.records_dead_lettered = dl.written;
            if dl.written > 0 {
                summary.dead_letter = Some(dl.path().to_owned());
            }
            dl.finish()?;
        }
        // A failed record must be read again next run, so the watermark
        // only moves when every record went through.
        if summary.records_failed == 0
            && !options.full_refresh
            && !options.dry_run
            && let Some(w) = &watermarks
        {
            match (&self.shared_state, &state_path) {
                (Some(storage), _) => {
                    if w.changed() {
                        storage.save_state(&self.name, &w.to_json()?).await?;
                        summary.state_saved = Some(PathBuf::from(format!(
                            "{} (pipeline {})",
                            storage.describe(),
                            self.name
                        )));
                    }
                }
                (None, Some(path)) => {
                    if w.save()? {
                        summary.state_saved = Some(path.clone());
                    }
                }
                (None, None) => {}
            }
        }
        if options.full_refresh && watermarks.is_some() {
            summary
                .notes
                .push("full refresh: the saved watermarks were not used and are unchanged".into());
        }
        if options.dry_run {
            summary
                .notes
                .push("dry run: nothing was sent or written, no state saved".into());
        }
        summary.api_calls += stats.http_calls.load(Ordering::Relaxed);
        summary.retries = stats.retries.load(Ordering::Relaxed);
        summary.records_retried = outcome.records_retried;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// Moves the records a sink refused into the summary and the dead letter.
fn drain(
    outcome: &mut Outcome,
    summary: &mut Summary,
    dead_letter: &mut Option<DeadLetter>,
    pipeline: &str,
    sink: usize,
) -> anyhow::Result<()> {
    for rejected in outcome.rejected.drain(..) {
        summary.records_failed += 1;
        fail(
            dead_letter,
            pipeline,
            &format!("sinks[{sink}]"),
            &rejected.error.to_string(),
            &rejected.record,
        )?;
    }
    Ok(())
}

fn fail(
    dead_letter: &mut Option<DeadLetter>,
    pipeline: &str,
    stage: &str,
    error: &str,
    record: &Value,
) -> anyhow::Result<()> {
    tracing::warn!(pipeline, stage, "record failed: {error}");
    match dead_letter {
        Some(dl) => dl.write(stage, error, record),
        None => Ok(()),
    }
}
