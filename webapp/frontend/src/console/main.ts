import { ConsoleApi, login } from './api';
import { chartJs } from './charts';
import { ConsoleController } from './controller';
import { sessionStore } from './session';
import { consoleStrings as s } from './strings';
import { ConsoleView } from './view';

// Staff console (console.html): wiring only.

const root = document.getElementById('console-app');
if (!root) throw new Error('#console-app missing from console.html');

document.documentElement.lang = 'en';
document.title = s.pageTitle;

const view = new ConsoleView(
  root,
  s,
  {
    signIn: (username, password) => void controller.signIn(username, password),
    signOut: () => controller.signOut(),
    showTab: (tab) => controller.showTab(tab),
    reloadTab: () => void controller.reloadTab(),
    openConversation: (id) => void controller.openConversation(id),
    moreConversations: () => void controller.moreConversations(),
    upload: (file, filename, language) => void controller.upload(file, filename, language),
    verifyAudit: () => void controller.verifyAudit(),
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
  },
  chartJs,
);

const controller = new ConsoleController({
  view,
  storage: sessionStore(),
  strings: s,
  login: (username, password) => login(username, password),
  makeApi: (creds) => new ConsoleApi(creds),
});

// Background tabs poll slowly (browsers throttle timers): catch up when the tab is shown again.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') void controller.refresh();
});

controller.start();
