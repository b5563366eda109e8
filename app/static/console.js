// The Ttalkkac console: plain browser JavaScript, no build step, no library, no outside URL.
// It calls the same HTTP API as curl does; every path is relative to the page, so the console
// also works behind a proxy that serves the API under a path prefix.
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  // sessionStorage: the key lives as long as the browser tab, never in a file or a cookie.
  const KEY_STORE = 'ttalkkac.apiKey';
  const LANG_STORE = 'ttalkkac.lang';
  const POLL_MS = 1500;
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

  // --- interface text, Korean and English -------------------------------------------------

  const TEXT = {
    ko: {
      tabPlan: '기획안', tabTrain: '학습', tabAdapters: '어댑터',
      apiKey: 'API 키', apiKeyHint: '키가 없으면 비워 두세요', close: '닫기',
      meeting: '회의록', meetingHint: '[00:01] 김민수: 오늘은 회의록 요약 서비스 도입을 논의하겠습니다.',
      meetingFile: '파일에서 읽기 (.txt 또는 발화 목록 JSON)', adapter: '어댑터',
      advanced: '고급 설정', maxTokens: '최대 토큰', temperature: '온도', seed: '시드',
      generate: '기획안 만들기', stop: '중지', copyMarkdown: 'Markdown 복사', downloadJson: 'JSON 다운로드',
      notionParent: 'Notion 상위 페이지 (URL 또는 ID)', pushNotion: 'Notion에 올리기', notionOpen: 'Notion에서 열기',
      notionNotKept: '이 기획안은 기록에 없어 Notion에 올릴 수 없습니다 (PLAN_HISTORY)',
      uploadDataset: '1. 데이터셋 올리기', datasetFile: '파일 (.zip 골드 데이터 또는 .jsonl)', datasetName: '이름',
      upload: '올리기', startJob: '2. 학습 시작', dataset: '데이터셋', suffix: '어댑터 이름 접미사',
      advancedTrain: '고급 설정 (비워 두면 가이드의 기본값)', maxSteps: '최대 스텝', epochs: '에폭',
      learningRate: '학습률', gradAccum: '그래디언트 누적', minQuality: '최소 품질 점수',
      maxEvalSamples: '검증 예시 수', loraR: 'LoRA r', loraAlpha: 'LoRA alpha',
      cpuPreset: 'CPU 데모 값 채우기', start: '시작', jobs: '3. 작업', job: '작업', cancel: '취소',
      lossChart: '손실 (학습: 파랑, 검증: 주황)', events: '이벤트', refresh: '새로 고침',
      useBase: '기본 모델로 되돌리기', name: '이름', state: '상태', fieldChrf: '필드 chrF',
      floor: '일반 하한', validRate: '유효율', grounding: '근거성', created: '생성', actions: '동작',
      defaultAdapter: '기본값 ({name})', baseModel: '기본 모델', activate: '활성화',
      activateNamed: '{name} 활성화', waitingEngine: '엔진을 기다리는 중…',
      planned: '회의록을 {chunks}개 부분으로 나누어 생성합니다',
      tokensStatus: '부분 {chunk}/{chunks} · 시도 {attempt} · 토큰 {tokens}',
      retrying: '부분 {chunk}: 답이 스키마에 맞지 않아 다시 생성합니다 ({message})',
      chunkDone: '부분 {done}/{chunks} 완료 · 토큰 {tokens}', stopped: '중지했습니다.',
      planMeta: '{adapter} · 토큰 {tokens} · {seconds}초 · 부분 {chunks}', copied: '복사했습니다.',
      jsonNotList: 'JSON 파일은 발화 목록이어야 합니다: [{"timestamp", "speaker", "text"}, …]',
      networkError: '서버에 연결할 수 없습니다.', errorStatus: '오류 {status}',
      records: '사용 가능한 레코드', kind: '종류', size: '크기', skipped: '제외된 레코드 (이유별)',
      noneSkipped: '제외된 레코드가 없습니다.', allStats: '전체 통계', reason: '이유', count: '개수',
      noDatasets: '(데이터셋 없음)', noJobs: '(작업 없음)', step: '스텝 {step}/{total}',
      adapterReady: '어댑터: {name}', usePlan: '이 어댑터로 기획안 만들기', noLoss: '아직 손실 값이 없습니다.',
      status_queued: '대기 중', status_running: '실행 중', status_cancelling: '취소 중',
      status_succeeded: '완료', status_failed: '실패', status_cancelled: '취소됨',
      badgeActive: '기본값', badgeServing: '서비스 중', badgeSwitching: '전환 중', badgeLoaded: '로드됨',
      badgeIncompatible: '다른 기본 모델',
      serving: '엔진 {engine} · 모드 {mode} · 상태 {state} · 기본 모델 {base}',
      merged: ' · 병합된 어댑터 {name}', switching: ' · {name}(으)로 전환 중…',
      lastSwitch: ' · 마지막 전환 {seconds}초', switchError: ' · 전환 실패: {error}',
      loraEngine: ' · LoRA 엔진 {state}',
    },
    en: {
      tabPlan: 'Plan', tabTrain: 'Train', tabAdapters: 'Adapters',
      apiKey: 'API key', apiKeyHint: 'leave empty if the API has no keys', close: 'Close',
      meeting: 'Meeting transcript', meetingHint: '[00:01] Kim: Today we discuss the meeting-notes service.',
      meetingFile: 'Read from a file (.txt or a JSON utterance list)', adapter: 'Adapter',
      advanced: 'Advanced', maxTokens: 'Max tokens', temperature: 'Temperature', seed: 'Seed',
      generate: 'Generate plan', stop: 'Stop', copyMarkdown: 'Copy as Markdown', downloadJson: 'Download JSON',
      notionParent: 'Notion parent page (URL or id)', pushNotion: 'Push to Notion', notionOpen: 'Open in Notion',
      notionNotKept: 'This plan is not in the history, so it cannot go to Notion (PLAN_HISTORY)',
      uploadDataset: '1. Upload a dataset', datasetFile: 'File (.zip of gold data, or .jsonl)', datasetName: 'Name',
      upload: 'Upload', startJob: '2. Start training', dataset: 'Dataset', suffix: 'Adapter name suffix',
      advancedTrain: 'Advanced (empty: the guide\'s defaults)', maxSteps: 'Max steps', epochs: 'Epochs',
      learningRate: 'Learning rate', gradAccum: 'Gradient accumulation', minQuality: 'Minimum quality score',
      maxEvalSamples: 'Validation examples', loraR: 'LoRA r', loraAlpha: 'LoRA alpha',
      cpuPreset: 'Fill in the CPU demo values', start: 'Start', jobs: '3. Jobs', job: 'Job', cancel: 'Cancel',
      lossChart: 'Loss (train: blue, validation: orange)', events: 'Events', refresh: 'Refresh',
      useBase: 'Back to the base model', name: 'Name', state: 'State', fieldChrf: 'Field chrF',
      floor: 'Generic floor', validRate: 'Valid rate', grounding: 'Grounding', created: 'Created', actions: 'Actions',
      defaultAdapter: 'Default ({name})', baseModel: 'Base model', activate: 'Activate',
      activateNamed: 'Activate {name}', waitingEngine: 'Waiting for the engine…',
      planned: 'The meeting is planned in {chunks} chunk(s)',
      tokensStatus: 'Chunk {chunk}/{chunks} · attempt {attempt} · {tokens} tokens',
      retrying: 'Chunk {chunk}: the answer did not validate, generating again ({message})',
      chunkDone: 'Chunk {done}/{chunks} done · {tokens} tokens', stopped: 'Stopped.',
      planMeta: '{adapter} · {tokens} tokens · {seconds} s · {chunks} chunk(s)', copied: 'Copied.',
      jsonNotList: 'A JSON file must be a list of utterances: [{"timestamp", "speaker", "text"}, …]',
      networkError: 'The server cannot be reached.', errorStatus: 'Error {status}',
      records: 'Usable records', kind: 'Kind', size: 'Size', skipped: 'Skipped records (by reason)',
      noneSkipped: 'No record was skipped.', allStats: 'All statistics', reason: 'Reason', count: 'Count',
      noDatasets: '(no datasets)', noJobs: '(no jobs)', step: 'step {step}/{total}',
      adapterReady: 'adapter: {name}', usePlan: 'Plan with this adapter', noLoss: 'No loss values yet.',
      status_queued: 'queued', status_running: 'running', status_cancelling: 'cancelling',
      status_succeeded: 'succeeded', status_failed: 'failed', status_cancelled: 'cancelled',
      badgeActive: 'default', badgeServing: 'serving', badgeSwitching: 'switching', badgeLoaded: 'loaded',
      badgeIncompatible: 'other base model',
      serving: 'engine {engine} · mode {mode} · state {state} · base model {base}',
      merged: ' · merged adapter {name}', switching: ' · switching to {name}…',
      lastSwitch: ' · last switch {seconds} s', switchError: ' · switch failed: {error}',
      loraEngine: ' · LoRA engine {state}',
    },
  };

  let lang = localStorage.getItem(LANG_STORE) === 'en' ? 'en' : 'ko';
  const rerender = []; // views whose dynamic text follows the language

  function t(key, vars = {}) {
    const text = TEXT[lang][key] ?? TEXT.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
  }

  function applyLanguage() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll('[data-i18n-placeholder]')) {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    }
    const toggle = $('#lang-toggle');
    toggle.textContent = lang === 'ko' ? 'English' : '한국어';
    toggle.lang = lang === 'ko' ? 'en' : 'ko';
    rerender.forEach((fn) => fn());
  }

  // --- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, envelope) {
      super(envelope.message || String(status));
      this.status = status;
      this.code = envelope.code;
      this.detail = envelope.detail;
      this.requestId = envelope.request_id;
    }
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function failure(response) {
    const text = await response.text();
    let envelope = null;
    try { envelope = JSON.parse(text).error; } catch { /* not the envelope: a proxy's page */ }
    return new ApiError(response.status, envelope || { message: text.slice(0, 300) || response.statusText });
  }

  async function request(path, { method = 'GET', json, form, signal } = {}) {
    const headers = authHeaders();
    let body = form;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    }
    try {
      return await fetch(path, { method, headers, body, signal });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(0, { message: t('networkError') });
    }
  }

  async function api(path, options = {}) {
    const response = await request(path, options);
    if (!response.ok && !(options.accept || []).includes(response.status)) throw await failure(response);
    return response.status === 204 ? null : response.json();
  }

  // Server-Sent Events over a POST (EventSource can only GET): {event, data} per event.
  async function* serverSentEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (!line || line.startsWith(':')) continue; // a comment: keep-alive
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') event = text;
          else if (field === 'data') data.push(text);
        }
        if (data.length) yield { event, data: JSON.parse(data.join('\n')) };
      }
    }
  }

  // --- errors, shown from the envelope ----------------------------------------------------

  function showError(error) {
    if (error.name === 'AbortError') return;
    if (!(error instanceof ApiError)) console.error(error);
    const status = error.status ? `${t('errorStatus', { status: error.status })}${error.code ? ` (${error.code})` : ''}: ` : '';
    $('#error-message').textContent = status + error.message;
    const list = $('#error-detail');
    list.replaceChildren();
    const detail = error.detail;
    const items = Array.isArray(detail)
      ? detail.map((d) => (d && d.field ? `${d.field}: ${d.message}` : JSON.stringify(d)))
      : detail && Array.isArray(detail.attempts)
        ? detail.attempts.map((a) => `#${a.attempt}: ${a.error}`)
        : [];
    for (const item of items) list.append(el('li', {}, item));
    $('#error').hidden = false;
  }

  function clearError() {
    $('#error').hidden = true;
  }

  // --- small DOM helpers (textContent only: no HTML from data is ever parsed) --------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === 'class') node.className = value;
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else if (value !== false && value != null) node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  const fmt = (value, digits = 1) => (value == null ? '—' : Number(value).toFixed(digits));
  const pct = (value) => (value == null ? '—' : `${(Number(value) * 100).toFixed(0)}%`);
  const when = (iso) => (iso ? new Date(iso).toLocaleString(lang === 'ko' ? 'ko-KR' : 'en-GB') : '');
  const bytes = (n) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

  function busy(button, on) {
    button.disabled = on;
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // --- tabs (arrow keys move between them, as the ARIA tabs pattern says) --------------------

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const onShown = {};

  function selectTab(name, { focus = false } = {}) {
    if (!tabs.some((tab) => tab.id === `tab-${name}`)) name = 'plan';
    for (const tab of tabs) {
      const on = tab.id === `tab-${name}`;
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      $(`#${tab.getAttribute('aria-controls')}`).hidden = !on;
      if (on && focus) tab.focus();
    }
    if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    onShown[name]?.();
  }

  // --- Plan ---------------------------------------------------------------------------------

  const plan = { controller: null, result: null, adapters: null };

  async function loadAdapterOptions() {
    try {
      plan.adapters = await api('adapters');
    } catch (error) {
      showError(error);
      return;
    }
    renderAdapterOptions();
  }

  function renderAdapterOptions() {
    const select = $('#adapter');
    const listing = plan.adapters;
    if (!listing) return;
    const chosen = select.value;
    select.replaceChildren(
      el('option', { value: '' }, t('defaultAdapter', { name: listing.active || t('baseModel') })),
      el('option', { value: 'base' }, t('baseModel')),
      ...listing.data.map((a) => el('option', { value: a.name, disabled: !a.compatible }, a.name)),
    );
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
  rerender.push(renderAdapterOptions);

  function meetingValue() {
    const text = $('#meeting').value;
    const trimmed = text.trim();
    // A pasted or loaded utterance list goes as a list; "[00:01] 김민수: …" is text.
    if (trimmed.startsWith('[') && trimmed.endsWith(']')) {
      try {
        const list = JSON.parse(trimmed);
        if (Array.isArray(list) && list.length && list.every((u) => u && typeof u === 'object')) return list;
      } catch { /* text that starts with a timestamp */ }
    }
    return text;
  }

  async function readMeetingFile(file) {
    const text = await file.text();
    if (!/\.json$/i.test(file.name)) {
      $('#meeting').value = text;
      return;
    }
    let list;
    try { list = JSON.parse(text); } catch { list = null; }
    if (!Array.isArray(list)) throw new ApiError(0, { message: t('jsonNotList') });
    $('#meeting').value = JSON.stringify(list, null, 1);
  }

  function numberField(id) {
    const value = $(id).value.trim();
    return value === '' ? undefined : Number(value);
  }

  async function generatePlan(event) {
    event.preventDefault();
    clearError();
    const body = { meeting: meetingValue() };
    const adapter = $('#adapter').value;
    if (adapter) body.adapter = adapter;
    for (const [id, field] of [['#max-tokens', 'max_tokens'], ['#temperature', 'temperature'], ['#seed', 'seed']]) {
      const value = numberField(id);
      if (value !== undefined) body[field] = value;
    }
    const submit = $('#plan-submit');
    const stop = $('#plan-stop');
    plan.controller = new AbortController();
    busy(submit, true);
    stop.hidden = false;
    $('#plan-result').hidden = true;
    $('#notion-link').hidden = true;
    $('#plan-progress').hidden = false;
    $('#plan-partial').textContent = '';
    const bar = $('#plan-bar');
    bar.removeAttribute('value');
    const status = $('#plan-status');
    status.textContent = t('waitingEngine');
    let done = 0;
    try {
      const response = await request('generate/stream', { method: 'POST', json: body, signal: plan.controller.signal });
      if (!response.ok) throw await failure(response);
      for await (const { event: kind, data } of serverSentEvents(response)) {
        if (kind === 'progress') {
          if (data.kind === 'admitted') status.textContent = t('waitingEngine');
          else if (data.kind === 'planned') status.textContent = t('planned', data);
          else if (data.kind === 'tokens') {
            status.textContent = t('tokensStatus', data);
            $('#plan-partial').textContent = data.text;
          } else if (data.kind === 'retry') status.textContent = t('retrying', data);
          else if (data.kind === 'chunk_done') {
            done += 1;
            bar.max = data.chunks;
            bar.value = done;
            status.textContent = t('chunkDone', { done, chunks: data.chunks, tokens: data.tokens });
            $('#plan-partial').textContent = data.text;
          }
        } else if (kind === 'plan') {
          showPlan(data);
        } else if (kind === 'error') {
          throw new ApiError(data.status, data.error);
        }
      }
    } catch (error) {
      if (error.name === 'AbortError') status.textContent = t('stopped');
      else {
        $('#plan-progress').hidden = true;
        showError(error);
      }
    } finally {
      busy(submit, false);
      stop.hidden = true;
      plan.controller = null;
    }
  }

  function showPlan(result) {
    plan.result = result;
    $('#plan-progress').hidden = true;
    $('#plan-rendered').replaceChildren(...markdownToNodes(result.markdown));
    $('#plan-warnings').replaceChildren(...result.warnings.map((w) => el('li', {}, w)));
    renderPlanMeta();
    $('#plan-result').hidden = false;
  }

  function renderPlanMeta() {
    const result = plan.result;
    if (!result) return;
    $('#plan-meta').textContent = t('planMeta', {
      adapter: result.adapter || t('baseModel'),
      tokens: result.usage.completion_tokens,
      seconds: ((result.timings.queue_ms + result.timings.generate_ms) / 1000).toFixed(1),
      chunks: result.chunks,
    });
  }
  rerender.push(renderPlanMeta);

  // The plan's Markdown is the server's (ttalkkac/render.py: the Korean section labels of the
  // Notion page); this shows exactly that document, so both share one set of labels.
  function markdownToNodes(markdown) {
    const nodes = [];
    let list = null;
    for (const line of markdown.split('\n')) {
      const heading = /^(#{1,3}) (.*)$/.exec(line);
      const bullet = /^- (.*)$/.exec(line);
      const numbered = /^\d+\. (.*)$/.exec(line);
      if (bullet || numbered) {
        const tag = bullet ? 'ul' : 'ol';
        if (!list || list.tagName.toLowerCase() !== tag) nodes.push((list = el(tag)));
        const text = (bullet || numbered)[1];
        const labelled = /^\*\*(.+?)\*\*: (.*)$/.exec(text);
        list.append(labelled ? el('li', {}, el('strong', {}, labelled[1]), `: ${labelled[2]}`) : el('li', {}, text));
        continue;
      }
      list = null;
      if (heading) nodes.push(el(`h${heading[1].length}`, {}, heading[2]));
      else if (line.trim()) nodes.push(el('p', {}, line));
    }
    return nodes;
  }

  async function copyMarkdown() {
    const text = plan.result?.markdown || '';
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard permission: a selected textarea and the older copy command.
      const area = el('textarea', { class: 'visually-hidden' }, text);
      document.body.append(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    $('#plan-meta').textContent = t('copied');
    setTimeout(renderPlanMeta, 1500);
  }

  function downloadJson() {
    const result = plan.result;
    if (!result) return;
    const blob = new Blob([`${JSON.stringify(result.plan, null, 2)}\n`], { type: 'application/json' });
    const link = el('a', { href: URL.createObjectURL(blob), download: 'plan.json' });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  // One page per plan: the server answers the existing page when asked again.
  async function pushToNotion(event) {
    event.preventDefault();
    const result = plan.result;
    if (!result) return;
    if (!result.plan_id) {
      showError(new ApiError(0, { message: t('notionNotKept') }));
      return;
    }
    const button = $('#push-notion');
    button.disabled = true;
    try {
      const page = await api(`plans/${encodeURIComponent(result.plan_id)}/notion`, {
        method: 'POST',
        json: { parent_page_id: $('#notion-parent').value.trim() },
      });
      const link = $('#notion-link');
      link.href = page.url;
      link.hidden = false;
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  }

  // --- Train --------------------------------------------------------------------------------

  const train = { datasets: [], jobs: [], watch: 0, job: null, events: [], dataset: null };

  async function loadDatasets(select) {
    try {
      train.datasets = (await api('datasets?limit=100')).data;
    } catch (error) {
      showError(error);
      return;
    }
    const box = $('#train-dataset');
    const chosen = select || box.value;
    box.replaceChildren(
      ...(train.datasets.length
        ? train.datasets.map((d) => el('option', { value: d.id }, `${d.name} · ${d.id} · ${d.records}`))
        : [el('option', { value: '' }, t('noDatasets'))]),
    );
    if (chosen && train.datasets.some((d) => d.id === chosen)) box.value = chosen;
  }

  async function uploadDataset(event) {
    event.preventDefault();
    clearError();
    const file = $('#dataset-file').files[0];
    if (!file) return;
    const form = new FormData();
    form.append('file', file);
    const name = $('#dataset-name').value.trim();
    if (name) form.append('name', name);
    const button = $('#dataset-submit');
    busy(button, true);
    try {
      train.dataset = await api('datasets', { method: 'POST', form });
      renderDatasetReport();
      await loadDatasets(train.dataset.id);
    } catch (error) {
      showError(error);
    } finally {
      busy(button, false);
    }
  }

  function renderDatasetReport() {
    const dataset = train.dataset;
    if (!dataset) return;
    const loader = dataset.stats.loader || {};
    const skipped = Object.entries(loader.skipped || {}).filter(([, n]) => n);
    const report = $('#dataset-report');
    report.replaceChildren(
      el('h3', {}, `${dataset.name} (${dataset.id})`),
      el('dl', {},
        el('dt', {}, t('records')), el('dd', { id: 'dataset-records' }, String(dataset.records)),
        el('dt', {}, t('kind')), el('dd', {}, dataset.kind),
        el('dt', {}, t('size')), el('dd', {}, bytes(dataset.size_bytes))),
      el('h4', {}, t('skipped')),
      skipped.length
        ? el('table', { id: 'dataset-skipped' },
          el('thead', {}, el('tr', {}, el('th', {}, t('reason')), el('th', {}, t('count')))),
          el('tbody', {}, ...skipped.map(([reason, n]) => el('tr', {}, el('td', {}, reason), el('td', { class: 'num' }, String(n))))))
        : el('p', { class: 'muted' }, t('noneSkipped')),
      el('details', {}, el('summary', {}, t('allStats')), el('pre', {}, JSON.stringify(dataset.stats, null, 2))),
    );
    report.hidden = false;
  }
  rerender.push(renderDatasetReport);

  function hyperparameters() {
    const spec = {};
    for (const input of document.querySelectorAll('[data-hp]')) {
      const raw = input.value.trim();
      if (raw === '') continue;
      const path = input.dataset.hp.split('.');
      let target = spec;
      for (const part of path.slice(0, -1)) target = target[part] ??= {};
      target[path.at(-1)] = Number(raw);
    }
    return spec;
  }

  function cpuPreset() {
    // The README's first-five-minutes job: a few steps on two CPU cores, every record kept
    // (the shared gold data scores 6.0 everywhere, under the guide's min_quality of 7).
    const values = { max_steps: 3, gradient_accumulation_steps: 1, min_quality: 0, max_eval_samples: 2 };
    for (const input of document.querySelectorAll('[data-hp]')) {
      if (input.dataset.hp in values) input.value = values[input.dataset.hp];
    }
  }

  async function startJob(event) {
    event.preventDefault();
    clearError();
    const body = { dataset_id: $('#train-dataset').value, hyperparameters: hyperparameters() };
    const suffix = $('#train-suffix').value.trim();
    if (suffix) body.suffix = suffix;
    const button = $('#train-submit');
    busy(button, true);
    try {
      const job = await api('train', { method: 'POST', json: body });
      await loadJobs(job.id);
      watchJob(job.id);
    } catch (error) {
      showError(error);
    } finally {
      busy(button, false);
    }
  }

  async function loadJobs(select) {
    try {
      train.jobs = (await api('train?limit=50')).data;
    } catch (error) {
      showError(error);
      return;
    }
    renderJobOptions(select);
  }

  function renderJobOptions(select) {
    const box = $('#job-select');
    const chosen = select || box.value || train.job?.id;
    box.replaceChildren(
      el('option', { value: '' }, train.jobs.length ? '—' : t('noJobs')),
      ...train.jobs.map((j) => el('option', { value: j.id }, `${j.id} · ${t(`status_${j.status}`)} · ${when(j.created_at)}`)),
    );
    if (chosen && train.jobs.some((j) => j.id === chosen)) box.value = chosen;
  }
  rerender.push(() => renderJobOptions());

  // One job watched at a time: its row and its new events every POLL_MS until it ends.
  async function watchJob(id) {
    const token = ++train.watch;
    train.job = null;
    train.events = [];
    $('#job-events').replaceChildren();
    $('#job').hidden = !id;
    if (!id) return;
    let after = 0;
    for (;;) {
      let job;
      let page;
      try {
        job = await api(`train/${encodeURIComponent(id)}`);
        page = await api(`train/${encodeURIComponent(id)}/events?after=${after}`);
      } catch (error) {
        if (token === train.watch) showError(error);
        return;
      }
      if (token !== train.watch) return; // another job was chosen meanwhile
      train.job = job;
      for (const item of page.data) {
        train.events.push(item);
        $('#job-events').append(el('li', { class: item.level }, `${when(item.created_at)}  ${item.message}`));
      }
      after = page.next_after;
      renderJob();
      if (TERMINAL.has(job.status) && !page.data.length) return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (token !== train.watch) return;
    }
  }

  function renderJob() {
    const job = train.job;
    if (!job) return;
    $('#job-status').textContent = `${job.id}: ${t(`status_${job.status}`)}`;
    const option = [...$('#job-select').options].find((o) => o.value === job.id);
    if (option) option.textContent = `${job.id} · ${t(`status_${job.status}`)} · ${when(job.created_at)}`;
    const { step, total_steps: total } = job.progress;
    $('#job-progress').textContent = total ? t('step', { step, total }) : '';
    const bar = $('#job-bar');
    bar.max = total || 1;
    bar.value = job.status === 'succeeded' ? bar.max : step;
    const adapter = $('#job-adapter');
    adapter.replaceChildren();
    if (job.adapter_name) {
      adapter.append(t('adapterReady', { name: job.adapter_name }), ' ',
        el('button', { type: 'button', onclick: () => usePlanAdapter(job.adapter_name) }, t('usePlan')));
    }
    if (job.error?.message) adapter.append(el('span', { class: 'warnings' }, ` ${job.error.message}`));
    $('#job-cancel').disabled = !['queued', 'running'].includes(job.status);
    drawLossChart();
  }
  rerender.push(renderJob);

  async function cancelJob() {
    if (!train.job) return;
    clearError();
    try {
      train.job = await api(`train/${encodeURIComponent(train.job.id)}/cancel`, { method: 'POST' });
      renderJob();
    } catch (error) {
      showError(error);
    }
  }

  function usePlanAdapter(name) {
    selectTab('plan');
    loadAdapterOptions().then(() => { $('#adapter').value = name; });
  }

  // The loss chart: train and eval loss by step, from the job's metrics events, as SVG.
  function drawLossChart() {
    const svg = $('#loss-chart');
    const series = { train: [], eval: [] };
    for (const item of train.events) {
      if (item.type !== 'metrics' || item.data.step == null) continue;
      if (item.data.loss != null) series.train.push([item.data.step, item.data.loss]);
      if (item.data.eval_loss != null) series.eval.push([item.data.step, item.data.eval_loss]);
    }
    const ns = 'http://www.w3.org/2000/svg';
    const node = (tag, attrs, text) => {
      const n = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
      if (text != null) n.textContent = text;
      return n;
    };
    const all = [...series.train, ...series.eval];
    svg.replaceChildren();
    if (!all.length) {
      svg.append(node('text', { x: 320, y: 130, 'text-anchor': 'middle' }, t('noLoss')));
      return;
    }
    const [W, H, left, right, top, bottom] = [640, 260, 48, 16, 16, 32];
    const xs = all.map((p) => p[0]);
    const ys = all.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
    let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    if (y1 - y0 < 1e-6) [y0, y1] = [y0 - 0.5, y1 + 0.5];
    const pad = (y1 - y0) * 0.08;
    [y0, y1] = [y0 - pad, y1 + pad];
    const X = (x) => left + ((x - x0) / (x1 - x0)) * (W - left - right);
    const Y = (y) => top + (1 - (y - y0) / (y1 - y0)) * (H - top - bottom);
    svg.append(node('line', { x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, stroke: '#999' }));
    svg.append(node('line', { x1: left, y1: top, x2: left, y2: H - bottom, stroke: '#999' }));
    for (let i = 0; i <= 4; i += 1) {
      const y = y0 + ((y1 - y0) * i) / 4;
      svg.append(node('text', { x: left - 6, y: Y(y) + 4, 'text-anchor': 'end' }, y.toFixed(2)));
      svg.append(node('line', { x1: left, y1: Y(y), x2: W - right, y2: Y(y), stroke: '#eee' }));
    }
    svg.append(node('text', { x: left, y: H - 10, 'text-anchor': 'start' }, `step ${x0}`));
    svg.append(node('text', { x: W - right, y: H - 10, 'text-anchor': 'end' }, `step ${Math.max(...xs)}`));
    for (const [name, points] of Object.entries(series)) {
      if (!points.length) continue;
      const path = points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
      svg.append(node('polyline', { class: name, points: path, fill: 'none', 'stroke-width': 2, 'data-series': name }));
      for (const [x, y] of points) {
        svg.append(node('circle', { class: name, cx: X(x), cy: Y(y), r: 3, fill: 'white', 'stroke-width': 2 }));
      }
    }
  }

  // --- Adapters -----------------------------------------------------------------------------

  const adapters = { listing: null, ready: null, base: null, polling: 0 };

  async function loadAdapters() {
    try {
      const [listing, ready, baseEvals] = await Promise.all([
        api('adapters'),
        api('ready', { accept: [503] }), // not ready is an answer here, not an error
        api('evaluations?adapter=base&limit=20').catch(() => ({ data: [] })),
      ]);
      adapters.listing = listing;
      adapters.ready = ready;
      adapters.base = baseEvals.data.find((e) => e.status === 'succeeded' && e.summary) || null;
      plan.adapters = listing;
      renderAdapterOptions();
    } catch (error) {
      showError(error);
      return;
    }
    renderAdapters();
  }

  function renderAdapters() {
    const { listing, ready } = adapters;
    if (!listing || !ready) return;
    let status = t('serving', { engine: ready.engine, mode: ready.mode, state: ready.state, base: listing.base_model });
    if (ready.merged_adapter) status += t('merged', { name: ready.merged_adapter });
    if (ready.switching_to) status += t('switching', { name: ready.switching_to });
    if (ready.last_switch_s != null) status += t('lastSwitch', { seconds: fmt(ready.last_switch_s) });
    if (ready.switch_error) status += t('switchError', { error: ready.switch_error });
    if (ready.lora_engine) status += t('loraEngine', { state: ready.lora_engine });
    $('#serving-status').textContent = status;
    // Which weights answer a default request: the merged ones in merged mode, else the active.
    const serving = ready.mode === 'merged' ? ready.merged_adapter : listing.active;
    const base = adapters.base?.summary;
    const rows = [
      el('tr', { 'data-adapter': 'base' },
        el('td', {}, t('baseModel')),
        el('td', {}, serving == null ? el('span', { class: 'badge on' }, t('badgeServing')) : null),
        el('td', { class: 'num' }, fmt(base?.field_chrf)),
        el('td', { class: 'num' }, fmt(base?.generic_floor?.field_chrf)),
        el('td', { class: 'num' }, pct(base?.valid_rate)),
        el('td', { class: 'num' }, fmt(base?.grounding, 2)),
        el('td', {}, ''),
        el('td', {}, '')),
    ];
    for (const a of listing.data) {
      const score = a.evaluation || {};
      const badges = [
        a.is_active && ['on', 'badgeActive'],
        serving === a.name && ['on', 'badgeServing'],
        ready.switching_to === a.name && ['warn', 'badgeSwitching'],
        a.loaded && ['', 'badgeLoaded'],
        !a.compatible && ['warn', 'badgeIncompatible'],
      ].filter(Boolean).map(([kind, key]) => el('span', { class: `badge ${kind}` }, t(key)));
      rows.push(el('tr', { 'data-adapter': a.name },
        el('td', {}, a.name),
        el('td', {}, ...badges),
        el('td', { class: 'num' }, fmt(score.field_chrf)),
        el('td', { class: 'num' }, fmt(score.generic_floor_field_chrf)),
        el('td', { class: 'num' }, pct(score.valid_rate)),
        el('td', { class: 'num' }, fmt(score.grounding, 2)),
        el('td', {}, when(a.created_at)),
        el('td', {}, el('button', {
          type: 'button',
          class: 'activate',
          'aria-label': t('activateNamed', { name: a.name }),
          disabled: a.is_active || !a.compatible,
          onclick: (event) => activate(a.name, event.currentTarget),
        }, t('activate')))));
    }
    $('#adapters-table tbody').replaceChildren(...rows);
    $('#adapters-deactivate').disabled = listing.active == null;
  }
  rerender.push(renderAdapters);

  async function activate(name, button) {
    clearError();
    busy(button, true);
    try {
      await api(`adapters/${encodeURIComponent(name)}/activate`, { method: 'POST' });
      await followSwitch();
    } catch (error) {
      showError(error);
      busy(button, false);
    }
  }

  async function deactivate() {
    clearError();
    try {
      await api('adapters/active', { method: 'DELETE' });
      await followSwitch();
    } catch (error) {
      showError(error);
    }
  }

  // Merged serving switches engines in the background: /ready says how far it got.
  async function followSwitch() {
    const token = ++adapters.polling;
    for (;;) {
      await loadAdapters();
      if (token !== adapters.polling || !adapters.ready?.switching_to) return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  // --- wiring -------------------------------------------------------------------------------

  onShown.plan = loadAdapterOptions;
  onShown.train = () => { loadDatasets(); loadJobs(); };
  onShown.adapters = loadAdapters;

  document.addEventListener('DOMContentLoaded', () => {
    const key = $('#api-key');
    key.value = sessionStorage.getItem(KEY_STORE) || '';
    key.addEventListener('change', () => {
      const value = key.value.trim();
      if (value) sessionStorage.setItem(KEY_STORE, value);
      else sessionStorage.removeItem(KEY_STORE);
      clearError();
      selectTab(location.hash.slice(1)); // reload the tab's data with the new key
    });
    $('#lang-toggle').addEventListener('click', () => {
      lang = lang === 'ko' ? 'en' : 'ko';
      localStorage.setItem(LANG_STORE, lang);
      applyLanguage();
    });
    $('#error-close').addEventListener('click', clearError);
    for (const tab of tabs) tab.addEventListener('click', () => selectTab(tab.id.slice(4)));
    $('nav[role="tablist"]').addEventListener('keydown', (event) => {
      const index = tabs.indexOf(document.activeElement);
      if (index < 0) return;
      const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      selectTab(tabs[(next + tabs.length) % tabs.length].id.slice(4), { focus: true });
    });
    window.addEventListener('hashchange', () => selectTab(location.hash.slice(1)));

    $('#plan-form').addEventListener('submit', generatePlan);
    $('#plan-stop').addEventListener('click', () => plan.controller?.abort());
    $('#meeting-file').addEventListener('change', (event) => {
      const file = event.target.files[0];
      if (file) readMeetingFile(file).catch(showError);
    });
    $('#copy-markdown').addEventListener('click', copyMarkdown);
    $('#download-json').addEventListener('click', downloadJson);
    $('#notion-form').addEventListener('submit', pushToNotion);

    $('#dataset-form').addEventListener('submit', uploadDataset);
    $('#train-form').addEventListener('submit', startJob);
    $('#cpu-preset').addEventListener('click', cpuPreset);
    $('#job-select').addEventListener('change', (event) => watchJob(event.target.value));
    $('#job-cancel').addEventListener('click', cancelJob);

    $('#adapters-refresh').addEventListener('click', loadAdapters);
    $('#adapters-deactivate').addEventListener('click', deactivate);

    applyLanguage();
    selectTab(location.hash.slice(1) || 'plan');
  });
})();
