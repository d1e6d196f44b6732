/* NHR certificate verifier: scan the QR code with the camera, or read it from a photo, and send the
   decoded "HC1:" text through the same form (and the same server-side verification) as pasted text.
   The QR decoder (jsQR, vendored, served by this app) is loaded only when the reader asks to scan.
   Nothing leaves the page but the form post; without this script the paste form works as before. */
(function () {
  "use strict";
  var form = document.getElementById("verify-form");
  var scan = document.getElementById("scan");
  if (!form || !scan) { return; }
  var text = document.getElementById("hc1");
  var status = document.getElementById("scan-status");
  var video = document.getElementById("scan-video");
  var photo = document.getElementById("scan-photo");
  var stopButton = document.getElementById("scan-stop");
  var canvas = document.createElement("canvas");
  var context = canvas.getContext("2d", { willReadFrequently: true });
  var stream = null;
  var decoder = null;

  function say(key) { status.textContent = status.getAttribute("data-" + key) || ""; }

  function loadDecoder() {
    if (decoder) { return decoder; }
    decoder = new Promise(function (resolve, reject) {
      if (window.jsQR) { resolve(window.jsQR); return; }
      var s = document.createElement("script");
      s.src = scan.getAttribute("data-decoder");
      s.onload = function () { window.jsQR ? resolve(window.jsQR) : reject(new Error("decoder")); };
      s.onerror = function () { decoder = null; reject(new Error("decoder")); };
      document.head.appendChild(s);
    });
    return decoder;
  }

  function decode(jsQR, source, width, height) {
    var scale = Math.min(1, 1000 / Math.max(width, height));  /* phone photos are large; 1000 px is plenty */
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    var pixels = context.getImageData(0, 0, canvas.width, canvas.height);
    var found = jsQR(pixels.data, pixels.width, pixels.height, { inversionAttempts: "attemptBoth" });
    return found && found.data ? found.data : null;
  }

  function submit(decoded) {
    stop();
    text.value = decoded.trim();
    say("found");
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  }

  function stop() {
    if (stream) { stream.getTracks().forEach(function (t) { t.stop(); }); stream = null; }
    video.hidden = true;
    stopButton.hidden = true;
    scan.disabled = false;
  }

  function tick(jsQR) {
    if (!stream) { return; }
    if (video.readyState >= 2 && video.videoWidth) {
      var decoded = decode(jsQR, video, video.videoWidth, video.videoHeight);
      if (decoded) { submit(decoded); return; }
    }
    window.requestAnimationFrame(function () { tick(jsQR); });
  }

  scan.addEventListener("click", function () {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { say("nocamera"); photo.focus(); return; }
    scan.disabled = true;
    say("loading");
    Promise.all([loadDecoder(), navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false })])
      .then(function (got) {
        stream = got[1];
        video.srcObject = stream;
        video.hidden = false;
        stopButton.hidden = false;
        return video.play().then(function () { say("looking"); tick(got[0]); });
      })
      .catch(function () { stop(); say("nocamera"); });
  });

  stopButton.addEventListener("click", function () { stop(); say("stopped"); });

  photo.addEventListener("change", function () {
    var file = photo.files && photo.files[0];
    if (!file) { return; }
    say("loading");
    loadDecoder().then(function (jsQR) {
      return createImageBitmap(file).then(function (image) {
        var decoded = decode(jsQR, image, image.width, image.height);
        if (decoded) { submit(decoded); } else { say("notfound"); }
      });
    }).catch(function () { say("notfound"); });
  });

  document.getElementById("scan-tools").hidden = false;
})();
