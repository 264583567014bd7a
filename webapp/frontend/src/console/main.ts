import { CaseApi } from './api';
import { ConsoleController } from './controller';
import { sessionStore } from './session';
import { consoleStrings as s } from './strings';
import { ConsoleView } from './view';

// Staff console for escalated cases (console.html): wiring only.

const root = document.getElementById('console-app');
if (!root) throw new Error('#console-app missing from console.html');

document.documentElement.lang = 'en';
document.title = s.pageTitle;

const view = new ConsoleView(root, s, {
  signIn: (token, staffName) => void controller.signIn(token, staffName),
  signOut: () => controller.signOut(),
  setFilter: (filter) => controller.setFilter(filter),
  refresh: () => void controller.refresh(),
  select: (id) => controller.select(id),
  claim: () => void controller.claim(),
  handback: () => void controller.handback(),
  resolve: () => void controller.resolve(),
  replyInput: (text) => controller.replyInput(text),
  sendReply: () => void controller.sendReply(),
  dismissNotice: () => controller.dismissNotice(),
  dismissError: () => controller.dismissError(),
});

const controller = new ConsoleController({
  view,
  storage: sessionStore(),
  strings: s,
  makeApi: (creds) => new CaseApi(creds),
});

// Background tabs poll slowly (browsers throttle timers): catch up when the tab is shown again.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') void controller.refresh();
});

controller.start();
