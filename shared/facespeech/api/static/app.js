// The web page over the REST API: upload, train, render, watch jobs. No framework and no
// build step; every value from the server reaches the page through textContent, never HTML.
"use strict";

const KEY_STORE = "facespeech.key";
const ACTIVE = new Set(["queued", "running"]);
const BUSY_DATASET = new Set(["uploaded", "processing"]);
const POLL_ACTIVE_MS = 2000;
const POLL_IDLE_MS = 15000;

const $ = (id) => document.getElementById(id);
let watchedRender = null; // id of the render job whose video is shown once it finishes
let pollTimer = null;

class ApiError extends Error {
  constructor(status, problem) {
    super(describeProblem(status, problem));
    this.status = status;
  }
}

function describeProblem(status, problem) {
  if (!problem || typeof problem !== "object") return `the server answered ${status}`;
  const fields = (problem.errors || []).map((e) => `${(e.loc || []).join(".")}: ${e.msg}`);
  const detail = [problem.detail, ...fields].filter(Boolean).join("; ");
  return `${problem.title || status}${detail ? `: ${detail}` : ""}`;
}

function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${apiKey()}`, ...extra };
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// fetch() cannot report upload progress; XMLHttpRequest can.
function postForm(path, form, bar) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    for (const [name, value] of Object.entries(authHeaders({ "Idempotency-Key": crypto.randomUUID() }))) {
      request.setRequestHeader(name, value);
    }
    if (bar) {
      bar.hidden = false;
      bar.value = 0;
      request.upload.onprogress = (event) => {
        if (event.lengthComputable) bar.value = event.loaded / event.total;
      };
    }
    request.onload = () => {
      if (bar) bar.hidden = true;
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch (_) {
        body = null;
      }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new ApiError(request.status, body));
    };
    request.onerror = () => {
      if (bar) bar.hidden = true;
      reject(new Error("the upload was cut off (network error)"));
    };
    request.send(form);
  });
}

function notify(message, ok = false) {
  const notice = $("notice");
  notice.textContent = message;
  notice.className = ok ? "ok" : "";
  notice.hidden = !message;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function button(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = "small";
  element.textContent = label;
  element.addEventListener("click", onClick);
  return element;
}

function duration(seconds) {
  if (seconds == null) return "";
  const s = Math.round(seconds);
  return s < 90 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

function humanBytes(bytes) {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

function fillSelect(select, options, emptyLabel) {
  const chosen = select.value;
  select.replaceChildren();
  for (const [value, label] of options) select.add(new Option(label, value));
  if (!options.length) select.add(new Option(emptyLabel, ""));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
}

async function refreshDatasets() {
  const datasets = (await api("/v1/datasets?limit=20")).data;
  const body = $("datasets").tBodies[0];
  body.replaceChildren();
  for (const dataset of datasets) {
    const row = body.insertRow();
    cell(row, dataset.name || dataset.id);
    cell(row, dataset.status, `status-${dataset.status === "ready" ? "succeeded" : dataset.status}`);
    cell(row, humanBytes(dataset.size_bytes));
    const note = cell(row, dataset.error || "", dataset.error ? "error" : "");
    if (dataset.contact_sheet_url) {
      const link = document.createElement("a");
      link.href = dataset.contact_sheet_url;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = "tracking check (landmarks and masks)";
      note.append(link);
    }
    row.insertCell().append(button("Delete", () => removeDataset(dataset)));
  }
  const trainable = datasets.filter((d) => d.status !== "failed" && d.status !== "pending_upload");
  fillSelect($("train-dataset"), trainable.map((d) => [d.id, d.name || d.id]), "upload a video first");
  return datasets.some((d) => BUSY_DATASET.has(d.status));
}

async function removeDataset(dataset) {
  const name = dataset.name || dataset.id;
  if (!confirm(`Delete ${name} and every model and video made from it?`)) return;
  try {
    await api(`/v1/datasets/${dataset.id}`, { method: "DELETE" });
    notify(`deleted ${name}`, true);
  } catch (error) {
    notify(error.message);
  }
  schedule(0);
}

function showVideo(job) {
  $("player").hidden = false;
  $("result-video").src = job.result_url;
  $("result-link").href = job.result_url;
}

async function showEvents(job) {
  const events = await api(`/v1/jobs/${job.id}/events?limit=1000`);
  $("events").hidden = false;
  $("events-job").textContent = `${job.kind} ${job.id}`;
  const list = $("events-list");
  list.replaceChildren();
  for (const event of events.data) {
    const item = document.createElement("li");
    item.textContent = `${new Date(event.at).toLocaleTimeString()} · ${event.kind} · ${event.message}`;
    list.append(item);
  }
}

async function cancel(job) {
  try {
    await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
    notify(`asked ${job.kind} job ${job.id} to stop`, true);
  } catch (error) {
    notify(error.message);
  }
  schedule(0);
}

function jobRow(body, job) {
  const row = body.insertRow();
  cell(row, job.kind);
  cell(row, job.status, `status-${job.status}`);
  cell(row, job.error ? `${job.stage} — ${job.error}` : job.stage, job.error ? "error" : "");
  const progress = row.insertCell();
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = job.progress;
  progress.append(bar, ` ${Math.round(100 * job.progress)} %`);
  if (ACTIVE.has(job.status) && job.eta_seconds != null) progress.append(` · ${duration(job.eta_seconds)} left`);
  cell(row, new Date(job.started_at || job.created_at).toLocaleString());
  const result = row.insertCell();
  if (job.result_url) {
    result.append(button("Play", () => showVideo(job)));
  } else if (job.kind === "train" && job.status === "succeeded") {
    const psnr = job.metrics && job.metrics.psnr;
    result.textContent = psnr ? `model · ${Number(psnr).toFixed(1)} dB held-out` : "model";
  }
  const actions = row.insertCell();
  actions.append(button("Timeline", () => showEvents(job).catch((e) => notify(e.message))));
  if (ACTIVE.has(job.status)) actions.append(" ", button("Cancel", () => cancel(job)));
}

async function refreshJobs() {
  const jobs = (await api("/v1/jobs?limit=25")).data;
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const job of jobs) jobRow(body, job);
  const watched = jobs.find((j) => j.id === watchedRender);
  if (watched && !ACTIVE.has(watched.status)) {
    watchedRender = null;
    if (watched.result_url) showVideo(watched);
    else notify(`the render ${watched.status}: ${watched.error || "no reason given"}`);
  }
  return jobs.some((j) => ACTIVE.has(j.status));
}

function modelLabel(model) {
  const psnr = model.metrics && model.metrics.psnr;
  const quality = psnr ? ` · ${Number(psnr).toFixed(1)} dB` : "";
  return `${model.preset} · ${new Date(model.created_at).toLocaleString()}${quality}`;
}

async function refreshModels() {
  const models = (await api("/v1/models?status=ready&limit=50")).data;
  fillSelect($("render-model"), models.map((m) => [m.id, modelLabel(m)]), "train a model first");
}

function ofLimit(used, limit, format) {
  return limit ? `${format(used)} of ${format(limit)}` : format(used);
}

async function refreshUsage() {
  const usage = await api("/v1/usage");
  const storage = ofLimit(usage.stored_bytes, usage.max_storage_bytes, humanBytes);
  const jobs = ofLimit(usage.active_jobs, usage.max_active_jobs, String);
  $("usage").textContent = `Stored: ${storage} · active jobs: ${jobs}`;
}

async function refresh() {
  if (!apiKey()) {
    notify("Enter an API key (`facespeech create-tenant NAME` prints one).");
    return;
  }
  try {
    const jobsBusy = await refreshJobs();
    const datasetsBusy = await refreshDatasets();
    await refreshModels();
    await refreshUsage();
    schedule(jobsBusy || datasetsBusy ? POLL_ACTIVE_MS : POLL_IDLE_MS);
  } catch (error) {
    notify(error.status === 401 ? "That API key is unknown or revoked." : error.message);
    schedule(POLL_IDLE_MS);
  }
}

function schedule(delay) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(refresh, delay);
}

async function upload(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("file", $("video-file").files[0]);
  if ($("dataset-name").value) form.append("name", $("dataset-name").value);
  try {
    const dataset = await postForm("/v1/datasets", form, $("upload-progress"));
    notify(`uploaded ${dataset.name || dataset.id}; now pick a preset and train`, true);
    event.target.reset();
    await refreshDatasets();
  } catch (error) {
    notify(error.message);
  }
}

async function train(event) {
  event.preventDefault();
  const request = { dataset_id: $("train-dataset").value, preset: $("train-preset").value };
  try {
    await api("/v1/training-runs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(request),
    });
    notify(`training (${request.preset}) queued; progress below`, true);
  } catch (error) {
    notify(error.message);
  }
  schedule(0);
}

async function render(event) {
  event.preventDefault();
  const options = { background: $("render-background").value, motion: $("render-motion").value };
  if ($("render-size").value) options.size = Number($("render-size").value);
  const form = new FormData();
  form.append("model_id", $("render-model").value);
  form.append("options", JSON.stringify(options));
  form.append("audio", $("audio-file").files[0]);
  try {
    const job = await postForm("/v1/renders", form, null);
    watchedRender = job.id;
    $("player").hidden = true;
    notify("rendering; the video appears here when it is done", true);
  } catch (error) {
    notify(error.message);
  }
  schedule(0);
}

function start() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORE, $("api-key").value.trim());
    notify("");
    schedule(0);
  });
  $("upload-form").addEventListener("submit", upload);
  $("train-form").addEventListener("submit", train);
  $("render-form").addEventListener("submit", render);
  $("refresh").addEventListener("click", () => schedule(0));
  schedule(0);
}

document.addEventListener("DOMContentLoaded", start);
