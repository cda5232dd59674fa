// The page's small JavaScript bridge, run once when the page loads (demo.load(js=...)).
//
// 1. plotly_click on the heatmap -> "layer,head,nonce" in a hidden textbox, whose input event Python
//    handles: a click inspects the head, a shift-click adds or removes it. Gradio 6 plots emit only
//    `change`, so the listener is attached here, again whenever the plot is redrawn.
// 3. The drawing canvas: strokes in the chosen colour and width; when a stroke ends (after a short
//    debounce, so a double tap sends once) the canvas goes to a hidden textbox as a PNG data URL;
//    Clear sends an empty value, which clears the drawing's result.
//    `window.__savStrokeEnd` keeps the moment the last stroke ended, for the latency benchmark.
// 2. Moving k redraws the frames of the top-k heads at once, from the scores the plot already holds
//    (score descending, ties by layer then head, as the server ranks them); the server re-scores the
//    latest value and its heatmap replaces this one when it arrives.
// 4. Hovering a point of the errors' projection shows its image beside the pointer: the point's
//    customdata holds a PNG or JPEG data URI (plotly's own hover label cannot show images).
() => {
  const topK = (plot, k) => {
    const cells = [];
    plot.data[0].z.forEach((row, layer) => row.forEach((score, head) => {
      if (score !== null && score !== undefined) cells.push([score, layer, head]);
    }));
    cells.sort((a, b) => b[0] - a[0] || a[1] - b[1] || a[2] - b[2]);
    return cells.slice(0, Math.max(1, Math.min(k, cells.length)));
  };
  const drawFrames = (k) => {
    const plot = document.querySelector('#sav-heatmap .js-plotly-plot');
    if (!plot || !plot.data || plot.data.length < 2 || !window.Plotly || !Number.isFinite(k)) return;
    const top = topK(plot, k);
    const custom = plot.data[0].customdata;
    window.Plotly.restyle(plot, {
      x: [top.map((c) => c[2])],
      y: [top.map((c) => c[1])],
      customdata: [top.map((c) => custom[c[1]][c[2]])],
    }, [1]);
    const title = plot.layout.title && plot.layout.title.text;
    if (title) window.Plotly.relayout(plot, { 'title.text': title.replace(/\d+ selected/, `${top.length} selected`) });
  };
  const bindCanvas = () => {
    const canvas = document.querySelector('#sav-canvas');
    if (!canvas || canvas.__savBound) return;
    canvas.__savBound = true;
    const ctx = canvas.getContext('2d');
    const clear = () => { ctx.fillStyle = '#ffffff'; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    let colour = '#dc2828';
    let drawing = false;
    let last = null;
    let timer = null;
    const brush = () => parseInt((document.querySelector('#sav-brush') || { value: 20 }).value, 10);
    const swatches = document.querySelectorAll('#sav-palette .sav-swatch');
    const choose = (value, swatch) => {
      colour = value;
      swatches.forEach((s) => s.classList.toggle('sav-chosen', s === swatch));
    };
    swatches.forEach((swatch) => swatch.addEventListener('click', () => choose(swatch.dataset.colour, swatch)));
    if (swatches.length) choose(swatches[0].dataset.colour, swatches[0]);
    const free = document.querySelector('#sav-free-colour');
    if (free) free.addEventListener('input', () => choose(free.value, null));
    const at = (event) => {
      const box = canvas.getBoundingClientRect();
      return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
    };
    const line = (from, to) => {
      ctx.strokeStyle = colour;
      ctx.lineWidth = brush();
      ctx.lineCap = 'round';
      ctx.lineJoin = 'round';
      ctx.beginPath();
      ctx.moveTo(from[0], from[1]);
      ctx.lineTo(to[0], to[1]);
      ctx.stroke();
    };
    const send = (value) => {
      const box = document.querySelector('#sav-drawing textarea, #sav-drawing input');
      if (!box) return;
      box.value = value;
      box.dispatchEvent(new Event('input', { bubbles: true }));
    };
    canvas.addEventListener('pointerdown', (event) => {
      drawing = true;
      last = at(event);
      canvas.setPointerCapture(event.pointerId);
      line(last, last);
    });
    canvas.addEventListener('pointermove', (event) => {
      if (!drawing) return;
      const point = at(event);
      line(last, point);
      last = point;
    });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      window.__savStrokeEnd = performance.now();
      clearTimeout(timer);
      timer = setTimeout(() => send(canvas.toDataURL('image/png')), 60);
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
    const reset = document.querySelector('#sav-canvas-clear');
    if (reset) reset.addEventListener('click', () => { clearTimeout(timer); clear(); send(''); });  // the result goes too
  };
  const hoverCard = () => {
    let card = document.querySelector('#sav-hover-thumb');
    if (!card) {
      card = document.createElement('div');
      card.id = 'sav-hover-thumb';
      card.appendChild(document.createElement('img'));
      document.body.appendChild(card);
    }
    return card;
  };
  const bindProjection = (plot) => {
    if (plot.__savBound || typeof plot.on !== 'function') return;
    plot.__savBound = true;
    plot.on('plotly_hover', (event) => {
      const point = event && event.points && event.points[0];
      const data = point && point.customdata;
      const uri = Array.isArray(data) ? data[0] : data;
      const card = hoverCard();
      const image = typeof uri === 'string' && /^data:image\/(png|jpeg);base64,[A-Za-z0-9+/=]+$/.test(uri);
      if (!image) { card.style.display = 'none'; return; }
      card.firstChild.src = uri;
      // left of the pointer (plotly puts its own label to the right), or right of it near the left edge
      const mouse = event.event || {};
      const px = mouse.clientX || 0;
      const py = mouse.clientY || 0;
      const x = px > 140 ? px - 128 : px + 24;
      card.style.left = `${x}px`;
      card.style.top = `${Math.max(4, Math.min(py - 52, window.innerHeight - 112))}px`;
      card.style.display = 'block';
    });
    plot.on('plotly_unhover', () => { hoverCard().style.display = 'none'; });
  };
  const bind = () => {
    bindCanvas();
    document.querySelectorAll('#sav-projection .js-plotly-plot').forEach(bindProjection);
    document.querySelectorAll('#sav-heatmap .js-plotly-plot').forEach((plot) => {
      if (plot.__savBound || typeof plot.on !== 'function') return;
      plot.__savBound = true;
      plot.on('plotly_click', (event) => {
        const point = event && event.points && event.points[0];
        if (!point || point.z === null) return;
        const target = event.event && event.event.shiftKey ? '#sav-click' : '#sav-inspect-cell';
        const box = document.querySelector(`${target} textarea, ${target} input`);
        if (!box) return;
        box.value = `${point.y},${point.x},${Date.now()}`;
        box.dispatchEvent(new Event('input', { bubbles: true }));
      });
    });
    document.querySelectorAll('#sav-k input').forEach((input) => {
      if (input.__savBound) return;
      input.__savBound = true;
      input.addEventListener('input', () => drawFrames(parseInt(input.value, 10)));
    });
  };
  new MutationObserver(bind).observe(document.body, { childList: true, subtree: true });
  bind();
}
