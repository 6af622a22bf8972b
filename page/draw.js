"use strict";
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const number = document.getElementById("number");
const digits = document.getElementById("digits");
const statusLine = document.getElementById("status");
const HINT = "Write a digit, or a number with a little room between its digits.";
let strokes = [];    // every stroke on the pad, as canvas points, for Undo
let pen = null;      // the pointer drawing now
let asked = 0;       // the latest request: answers to earlier ones are dropped
document.body.dataset.state = "idle";

function at(e) {
  const box = pad.getBoundingClientRect();
  return [(e.clientX - box.left) * pad.width / box.width, (e.clientY - box.top) * pad.height / box.height];
}

function line(from, to) {
  ctx.lineWidth = 20;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(...from);
  ctx.lineTo(...to);
  ctx.stroke();
}

function redraw() {
  ctx.clearRect(0, 0, pad.width, pad.height);
  for (const stroke of strokes) stroke.forEach((p, i) => line(stroke[Math.max(0, i - 1)], p));
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  pen = { id: e.pointerId, stroke: [at(e)] };
  strokes.push(pen.stroke);
  line(pen.stroke[0], pen.stroke[0]);
});

pad.addEventListener("pointermove", (e) => {
  if (!pen || e.pointerId !== pen.id) return;
  for (const c of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) {
    const p = at(c);
    line(pen.stroke[pen.stroke.length - 1], p);
    pen.stroke.push(p);
  }
});

function lift(e) {
  if (!pen || e.pointerId !== pen.id) return;
  pen = null;
  ask();
}
pad.addEventListener("pointerup", lift);
pad.addEventListener("pointercancel", lift);

async function ask() {
  const id = ++asked;
  if (!strokes.length) return show({});
  document.body.dataset.state = "busy";
  let answer;
  try {
    const png = await new Promise((done) => pad.toBlob(done, "image/png"));
    const response = await fetch("predict", { method: "POST", body: png, headers: { "Content-Type": "image/png" } });
    answer = await response.json();
  } catch (err) {
    answer = { error: "no answer from the server: is mnist.py serve still running?" };
  }
  if (id !== asked) return;
  show(answer);
}

function card(d) {
  // one digit's answer, under the middle of where it was written: the digit, how sure, its ten
  // probabilities as bars, and the 28×28 image the model saw
  const el = document.createElement("figure");
  el.className = "digit";
  el.style.left = `${100 * (d.box[0] + d.box[2]) / 2 / pad.width}%`;
  const b = document.createElement("b");
  b.textContent = d.digit;
  const small = document.createElement("small");
  small.textContent = `${(100 * d.probability).toFixed(1)}%`;
  const bars = document.createElement("div");
  bars.className = "bars";
  d.probabilities.forEach((p, k) => {
    const bar = document.createElement("span");
    bar.style.height = `${100 * p}%`;
    bar.title = `${k}: ${(100 * p).toFixed(1)}%`;
    bar.classList.toggle("top", k === d.digit);
    bars.append(bar);
  });
  const img = document.createElement("img");
  img.alt = `the 28×28 image the model saw, read as ${d.digit}`;
  img.src = d.input;
  el.append(b, small, bars, img);
  return el;
}

function show(answer) {
  number.textContent = answer.number ?? "?";
  digits.replaceChildren(...(answer.digits || []).map(card));
  statusLine.textContent = answer.error || (strokes.length ? "Lift the pen to ask again; Undo or Clear to change it." : HINT);
  document.body.dataset.state = "idle";
}

document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  ask();
});

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  asked++;
  show({});
});
