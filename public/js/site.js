// Shows the time the page was loaded, to prove scripts are served with the right type.
const clock = document.getElementById("clock");
if (clock) {
  clock.textContent = `Loaded at ${new Date().toLocaleTimeString()}.`;
}
