// Asks for the Grad-CAM picture until a worker has made it (the API answers 202 until then).
(function () {
  const img = document.getElementById('heatmap');
  if (!img) return;
  const caption = document.getElementById('heatmap-caption');
  let tries = 0;
  async function poll() {
    tries += 1;
    try {
      const r = await fetch(img.dataset.src);
      if (r.status === 200) {
        img.src = URL.createObjectURL(await r.blob());
        img.hidden = false;
        caption.textContent = 'Grad-CAM heat map';
        return;
      }
      if (r.status !== 202) { caption.textContent = 'Grad-CAM not available'; return; }
    } catch (e) { /* transient: try again */ }
    if (tries < 120) setTimeout(poll, 1000);
    else caption.textContent = 'Grad-CAM: no worker answered';
  }
  poll();
})();
