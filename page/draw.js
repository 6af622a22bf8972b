"use strict";
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const digit = document.getElementById("digit");
const probability = document.getElementById("probability");
const statusLine = document.getElementById("status");
const seen = document.getElementById("seen");
const bars = [];
for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.innerHTML = `<span>${d}</span><div class="bar"><span></span></div><span class="pct"></span>`;
  document.getElementById("bars").append(li);
  bars.push(li);
}
let pen = null;      // the pointer drawing now, and where it was
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

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  pen = { id: e.pointerId, last: at(e) };
  line(pen.last, pen.last);
});

pad.addEventListener("pointermove", (e) => {
  if (!pen || e.pointerId !== pen.id) return;
  for (const c of e.getCoalescedEvents ? e.getCoalescedEvents() : [e]) {
    const p = at(c);
    line(pen.last, p);
    pen.last = p;
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
  document.body.dataset.state = "idle";
}

function show(answer) {
  const probs = answer.probabilities || [];
  const read = "digit" in answer;
  digit.textContent = read ? answer.digit : "?";
  probability.textContent = read ? `${(100 * answer.probability).toFixed(1)}%` : "";
  statusLine.textContent = answer.error || "Lift the pen to ask again; Clear to start over.";
  seen.src = answer.input || "data:,";
  bars.forEach((li, d) => {
    const p = probs[d] || 0;
    li.querySelector(".bar span").style.width = `${100 * p}%`;
    li.querySelector(".pct").textContent = probs.length ? `${(100 * p).toFixed(1)}%` : "";
    li.classList.toggle("top", read && d === answer.digit);
  });
}

document.getElementById("clear").addEventListener("click", () => {
  ctx.clearRect(0, 0, pad.width, pad.height);
  asked++;
  show({});
  statusLine.textContent = "Draw one digit, 0 to 9, filling most of the square.";
  document.body.dataset.state = "idle";
});
