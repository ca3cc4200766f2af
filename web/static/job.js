// Polls the job's JSON status and fills the progress bar; reloads the page once the
// job is finished so the results table shows every row.
(function () {
  const el = document.getElementById('job');
  if (!el) return;
  const id = el.dataset.jobId;
  const progress = document.getElementById('progress');
  const status = document.getElementById('status');
  const counts = document.getElementById('counts');
  const cancel = document.getElementById('cancel');
  const finished = s => ['succeeded', 'failed', 'cancelled'].includes(s);
  if (cancel) cancel.addEventListener('click', async () => {
    const token = document.querySelector('meta[name="csrf-token"]').content;
    await fetch(`/api/v1/jobs/${id}/cancel`, {method: 'POST', headers: {'X-CSRFToken': token}});
    location.reload();
  });
  if (finished(el.dataset.status)) return;
  let shown = Number(progress.value);
  async function poll() {
    try {
      const r = await fetch(`/api/v1/jobs/${id}`, {headers: {Accept: 'application/json'}});
      if (r.ok) {
        const job = await r.json();
        progress.max = job.total || 1;
        progress.value = job.done + job.failed;
        status.textContent = job.status;
        status.className = 'status-' + job.status;
        const training = el.dataset.kind === 'training';
        counts.textContent = training
          ? `epoch ${job.done} of at most ${job.total}`
          : `${job.done} scored, ${job.failed} failed, of ${job.total}`;
        const flagged = document.getElementById('flagged-count');
        if (flagged) flagged.textContent = job.flagged;
        // Reload to show new rows: every epoch of a run, every 100 scored images.
        const step = training ? 1 : 100;
        if (finished(job.status) || job.done + job.failed - shown >= step) {
          location.reload();
          return;
        }
      }
    } catch (e) { /* transient: try again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 500);
})();
