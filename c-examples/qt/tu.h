// A TU of an ECTP-3 connection driven by a Qt event loop: see tu.cpp.
#ifndef ECTP_QT_TU_H
#define ECTP_QT_TU_H

#include <QByteArray>
#include <QFile>
#include <QList>
#include <QObject>
#include <QSocketNotifier>
#include <QString>
#include <QThread>
#include <QTimer>

#include <sys/socket.h>

#include <memory>

// One line on standard error, "qtclnt: <text>"; safe from any thread.
void report(const QString &text);
// The text of an errno value; safe from any thread.
QString errnoText(int error);

struct TuConfig {
    QString ownerText, groupText;           // as given, for messages
    quint16 port = 0;
    sockaddr_storage owner{};
    socklen_t ownerLen = 0;
    sockaddr_storage group{};
    socklen_t groupLen = 0;
    QString output = QStringLiteral("-");  // a file name, or "-" for standard output
    int tokenAfterMs = -1;                  // < 0: never ask for a token
    QList<QByteArray> tokenMessages;
    int exitAfterMs = -1;                   // < 0: stay until the end of the connection
};

class Tu : public QObject
{
    Q_OBJECT

public:
    explicit Tu(TuConfig config, QObject *parent = nullptr);
    ~Tu() override;

    // Opens the output, joins (mjoin blocks until the TO answers: at start-up
    // there is nothing else to do) and arms the notifier and the timers.
    // False, with the reason printed, when that failed.
    bool start();

public slots:
    // SIGINT or SIGTERM: leave the connection and finish with 128 + signal.
    void stop(int signal);

signals:
    // Emitted once, when the TU is done; the process should exit with `code`:
    // 0 end of the connection or left after -x, 1 error, 3 ECONNRESET.
    void finished(int code);

private:
    enum class TokenOutcome { Done, Refused, Failed };

    void drain();
    void startTokenExchange();
    void tokenExchangeFinished();
    bool writeOut(const char *data, qsizetype len);
    void outputFailed(); // reports the output's error
    // The end of it all: stops the notifier and the timers, closes the
    // output, releases the descriptor (mleave), waits for the token thread.
    // `ended`: the connection is already over (mrecvmsg gave 0 or ECONNRESET).
    void finish(int code, bool ended);

    TuConfig m_config;
    int m_sd = -1;
    QFile m_out;
    bool m_outFailed = false;
    std::unique_ptr<QSocketNotifier> m_notifier;
    QTimer m_tokenTimer;
    QTimer m_exitTimer;
    std::unique_ptr<QThread> m_tokenThread;
    // Written by the token thread before it ends, read after QThread::finished.
    TokenOutcome m_tokenOutcome = TokenOutcome::Failed;
    bool m_finished = false;
    QByteArray m_buf;
    quint64 m_bytes = 0;
    quint64 m_messages = 0;
    quint64 m_gaps = 0;
    quint64 m_truncated = 0;
};

#endif
