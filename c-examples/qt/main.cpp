// qtclnt - a TU of an ECTP-3 connection, as a Qt 6 console program.
//
// Joins the connection that the TO at the owner address runs on a multicast
// group, writes the TO's data to a file or standard output from a
// QSocketNotifier on the ECTP descriptor, and, when asked with -t, takes a
// token after that many ms (a QTimer), sends a few messages to the TO and
// returns the token. The same job as gclnt, the Qt way; see tu.cpp.
//
// Exit status: 0 end of the connection (or left after -x), 1 error, 2 usage,
// 3 ejected or the TO is gone (ECONNRESET), 128 + n after signal n.
#include "tu.h"

#include <QCommandLineParser>
#include <QCoreApplication>
#include <QSocketNotifier>
#include <QStringList>

#include <netdb.h>
#include <sys/socket.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace {

constexpr int MaxDelayMs = 86400000; // one day

// SIGINT and SIGTERM reach the event loop through a pipe: the handler only
// writes the signal's number, a QSocketNotifier reads it (the way the Qt
// documentation recommends for Unix signals).
int signalPipe[2] = {-1, -1};

void onStopSignal(int signal)
{
    const unsigned char byte = static_cast<unsigned char>(signal);
    const ssize_t written = ::write(signalPipe[1], &byte, 1);
    (void)written; // nothing more a signal handler could do about a failure
}

bool setUpSignals(QObject *context, Tu *tu)
{
    if (::pipe2(signalPipe, O_CLOEXEC | O_NONBLOCK) == -1) {
        report(QStringLiteral("pipe2: %1").arg(errnoText(errno)));
        return false;
    }
    auto *notifier = new QSocketNotifier(signalPipe[0], QSocketNotifier::Read, context);
    QObject::connect(notifier, &QSocketNotifier::activated, tu, [tu] {
        unsigned char byte = 0;
        if (::read(signalPipe[0], &byte, 1) == 1)
            tu->stop(byte);
    });
    struct sigaction sa {};
    sa.sa_handler = onStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND | SA_RESTART; // a second signal kills at once
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    // A player at the other end of a pipe that quits: EPIPE, then leave.
    std::signal(SIGPIPE, SIG_IGN);
    return true;
}

// A numeric IPv4 or IPv6 address (with %scope for a scoped IPv6 one), no
// name lookups.
bool parseAddress(const QString &text, quint16 port, sockaddr_storage *ss, socklen_t *len,
                  QString *error)
{
    addrinfo hints{};
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo *found = nullptr;
    const int rc = ::getaddrinfo(text.toLocal8Bit().constData(),
                                 QByteArray::number(port).constData(), &hints, &found);
    if (rc != 0) {
        *error = QStringLiteral("'%1' is not a numeric IPv4 or IPv6 address (%2)")
                     .arg(text, QString::fromLocal8Bit(::gai_strerror(rc)));
        return false;
    }
    std::memcpy(ss, found->ai_addr, found->ai_addrlen);
    *len = found->ai_addrlen;
    ::freeaddrinfo(found);
    return true;
}

int usageError(const QString &message)
{
    report(message);
    report(QStringLiteral("try 'qtclnt --help'"));
    return 2;
}

bool parseInt(const QString &text, int min, int max, int *out)
{
    bool ok = false;
    const int v = text.toInt(&ok);
    if (!ok || v < min || v > max)
        return false;
    *out = v;
    return true;
}

} // namespace

int main(int argc, char **argv)
{
    QCoreApplication app(argc, argv);
    QCoreApplication::setApplicationName(QStringLiteral("qtclnt"));

    QCommandLineParser parser;
    parser.setApplicationDescription(QStringLiteral(
        "A TU of an ECTP-3 connection: joins the connection of the TO at owner_ip on\n"
        "group_ip:port and writes the data it multicasts to outfile.\n"
        "Exit status: 0 end of the connection (or left after -x), 1 error, 2 usage,\n"
        "3 ejected or the TO is gone (ECONNRESET)."));
    const QCommandLineOption helpOption = parser.addHelpOption();
    const QCommandLineOption ownerOption(
        {QStringLiteral("l"), QStringLiteral("owner")},
        QStringLiteral("The TO's unicast address, IPv4 or IPv6 literal (default 127.0.0.1)."),
        QStringLiteral("owner_ip"), QStringLiteral("127.0.0.1"));
    const QCommandLineOption groupOption(
        {QStringLiteral("g"), QStringLiteral("group")},
        QStringLiteral("Multicast group, of the owner's family (default 239.255.10.10)."),
        QStringLiteral("group_ip"), QStringLiteral("239.255.10.10"));
    const QCommandLineOption portOption({QStringLiteral("p"), QStringLiteral("port")},
                                        QStringLiteral("Group port (default 5000)."),
                                        QStringLiteral("port"), QStringLiteral("5000"));
    const QCommandLineOption outputOption(
        {QStringLiteral("O"), QStringLiteral("output")},
        QStringLiteral("Where the data goes (default -: standard output)."),
        QStringLiteral("outfile"), QStringLiteral("-"));
    const QCommandLineOption tokenOption(
        {QStringLiteral("t"), QStringLiteral("token-after")},
        QStringLiteral("ms after joining, ask for a token, send the messages of -T, return it."),
        QStringLiteral("ms"));
    const QCommandLineOption messagesOption(
        {QStringLiteral("T"), QStringLiteral("token-messages")},
        QStringLiteral("Comma-separated messages to send with the token, each without a "
                       "terminating NUL; empty items are skipped (default \"token data,good "
                       "transmit\")."),
        QStringLiteral("list"), QStringLiteral("token data,good transmit"));
    const QCommandLineOption exitOption(
        {QStringLiteral("x"), QStringLiteral("exit-after")},
        QStringLiteral("Leave the connection (mleave) that long after joining, exit 0."),
        QStringLiteral("ms"));
    parser.addOptions(
        {ownerOption, groupOption, portOption, outputOption, tokenOption, messagesOption,
         exitOption});

    if (!parser.parse(QCoreApplication::arguments()))
        return usageError(parser.errorText());
    if (parser.isSet(helpOption)) {
        std::fputs(parser.helpText().toLocal8Bit().constData(), stdout);
        return 0;
    }
    if (!parser.positionalArguments().isEmpty())
        return usageError(QStringLiteral("unexpected argument '%1'")
                              .arg(parser.positionalArguments().constFirst()));

    TuConfig config;
    int port = 0;
    if (!parseInt(parser.value(portOption), 1, 65535, &port))
        return usageError(QStringLiteral("bad port '%1'").arg(parser.value(portOption)));
    if (parser.isSet(tokenOption)
        && !parseInt(parser.value(tokenOption), 0, MaxDelayMs, &config.tokenAfterMs))
        return usageError(QStringLiteral("bad token delay '%1'").arg(parser.value(tokenOption)));
    if (parser.isSet(exitOption)
        && !parseInt(parser.value(exitOption), 0, MaxDelayMs, &config.exitAfterMs))
        return usageError(QStringLiteral("bad exit delay '%1'").arg(parser.value(exitOption)));
    const QStringList messages =
        parser.value(messagesOption).split(QLatin1Char(','), Qt::SkipEmptyParts);
    for (const QString &message : messages)
        config.tokenMessages.append(message.toUtf8());
    config.output = parser.value(outputOption);
    config.ownerText = parser.value(ownerOption);
    config.groupText = parser.value(groupOption);
    config.port = quint16(port);

    QString error;
    if (!parseAddress(parser.value(ownerOption), quint16(port), &config.owner, &config.ownerLen,
                      &error))
        return usageError(QStringLiteral("owner address: %1").arg(error));
    if (!parseAddress(parser.value(groupOption), quint16(port), &config.group, &config.groupLen,
                      &error))
        return usageError(QStringLiteral("group address: %1").arg(error));
    if (config.owner.ss_family != config.group.ss_family)
        return usageError(QStringLiteral("the group address %1 is not of the owner's family")
                              .arg(parser.value(groupOption)));

    Tu tu(std::move(config));
    // Queued: finished() may come before exec() runs the loop.
    QObject::connect(&tu, &Tu::finished, &app, &QCoreApplication::exit, Qt::QueuedConnection);
    if (!setUpSignals(&app, &tu) || !tu.start())
        return 1;
    return QCoreApplication::exec();
}
