//! Users written straight into the app's database, for tests that need thousands of them
//! (a broadcast's audience) without thousands of conversations.

use diesel::{Connection, SqliteConnection};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use secrecy::ExposeSecret;

use super::TestApp;

impl TestApp {
    /// Users `ids` (chat = user id, English, no dialogs), registered at the app's now.
    pub async fn seed_users(&self, ids: impl IntoIterator<Item = i64>) {
        let now = vitte_actors::ports::Clock::now_millis(self.clock.as_ref());
        let rows: Vec<String> = ids
            .into_iter()
            .map(|id| format!("({id}, {id}, 'User{id}', 'en', {now}, {now})"))
            .collect();
        let statements: Vec<String> = rows
            .chunks(500)
            .map(|chunk| {
                format!(
                    "INSERT INTO users (id, chat_id, first_name, language_code, created_at, \
                     updated_at) VALUES {};",
                    chunk.join(",")
                )
            })
            .collect();
        let url = self.settings.database.url.expose_secret().to_owned();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut connection = SqliteConnection::establish(&path).expect("open SQLite");
                diesel::connection::SimpleConnection::batch_execute(
                    &mut connection,
                    "PRAGMA busy_timeout = 30000;",
                )
                .expect("busy timeout");
                for statement in statements {
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut connection,
                        &statement,
                    )
                    .expect("seed users");
                }
            })
            .await
            .expect("seeding finished");
        } else {
            let mut connection = AsyncPgConnection::establish(&url)
                .await
                .expect("connect to PostgreSQL");
            for statement in statements {
                connection
                    .batch_execute(&statement)
                    .await
                    .expect("seed users");
            }
        }
    }
}
