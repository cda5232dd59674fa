// The page's small JavaScript bridge, run once when the page loads (demo.load(js=...)).
//
// 1. plotly_click on the heatmap -> "layer,head,nonce" in a hidden textbox, whose input event Python
//    handles: a click inspects the head, a shift-click adds or removes it. Gradio 6 plots emit only
//    `change`, so the listener is attached here, again whenever the plot is redrawn.
// 2. Moving k redraws the frames of the top-k heads at once, from the scores the plot already holds
//    (score descending, ties by layer then head, as the server ranks them); the server re-scores the
//    latest value and its heatmap replaces this one when it arrives.
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
  const bind = () => {
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
