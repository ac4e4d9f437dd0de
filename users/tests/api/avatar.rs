//! `PUT/DELETE /api/v1/users/me/avatar` and `GET /api/v1/users/{id}/avatar`.

use crate::helpers::{TestApp, images};
use crate::on_both_backends;
use reqwest::StatusCode;

on_both_backends!(
    without_an_upload_the_avatar_is_generated_initials,
    a_png_avatar_round_trips_resized_and_re_encoded,
    jpeg_and_webp_uploads_are_accepted,
    metadata_of_the_upload_is_not_kept,
    an_unchanged_avatar_answers_304_to_its_etag,
    deleting_the_avatar_brings_back_the_generated_one,
    others_see_the_avatar_and_an_unknown_size_is_refused,
    a_50_mb_upload_is_refused_as_too_large,
    a_streamed_upload_without_a_length_is_cut_off_at_the_limit,
    a_png_bomb_is_refused_from_its_header,
    a_real_25_megapixel_png_is_refused_before_decoding,
    a_file_named_png_that_is_not_an_image_is_unsupported,
    a_gif_is_unsupported,
    a_truncated_jpeg_is_an_invalid_image,
    a_truncated_png_is_an_invalid_image,
    an_empty_upload_is_unsupported,
);

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("a PNG")
}

async fn without_an_upload_the_avatar_is_generated_initials(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let answer = app.avatar(&ada, &ada.id, Some(64)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), "image/svg+xml");
    let svg = String::from_utf8(answer.bytes.clone()).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains(">AL</text>"), "{svg}");
    assert!(svg.contains("width=\"64\""), "{svg}");
    assert!(answer.header("etag").starts_with('"'));
    assert_eq!(answer.header("cache-control"), "private, max-age=300");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
}

async fn a_png_avatar_round_trips_resized_and_re_encoded(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let answer = app.put_avatar(&ada, images::png(640, 480)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["has_avatar"], true);
    let url = answer.body["avatar_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/api/v1/users/{}/avatar?v=", ada.id)));
    assert!(!url.ends_with("v=default"));
    assert_eq!(app.me(&ada).await.body["avatar_url"], url);

    for (size, expected) in [(Some(64), 64), (Some(256), 256), (None, 256)] {
        let image = app.avatar(&ada, &ada.id, size).await;
        assert_eq!(image.status, StatusCode::OK);
        assert_eq!(image.header("content-type"), "image/png");
        assert_eq!(image.header("cache-control"), "private, max-age=300");
        let decoded = decode(&image.bytes);
        assert_eq!((decoded.width(), decoded.height()), (expected, expected));
    }
    // A new upload gets a new URL.
    let again = app.put_avatar(&ada, images::png(100, 100)).await;
    assert_ne!(again.body["avatar_url"], url);
}

async fn jpeg_and_webp_uploads_are_accepted(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for bytes in [images::jpeg(300, 500), images::webp(200, 200)] {
        let answer = app.put_avatar(&ada, bytes).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let image = app.avatar(&ada, &ada.id, Some(256)).await;
        assert_eq!(image.header("content-type"), "image/png");
        let decoded = decode(&image.bytes);
        assert_eq!((decoded.width(), decoded.height()), (256, 256));
    }
}

async fn metadata_of_the_upload_is_not_kept(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    // A PNG with a text chunk carrying "GPS" data, inserted before IEND.
    let mut png = images::png(64, 64);
    let iend = png.len() - 12;
    let mut chunk = Vec::new();
    let data = b"Comment\0GPS 48.8584 N 2.2945 E secret-marker";
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(data);
    let crc = images::crc32(&chunk[4..]);
    chunk.extend_from_slice(&crc.to_be_bytes());
    png.splice(iend..iend, chunk);
    assert!(String::from_utf8_lossy(&png).contains("secret-marker"));
    let answer = app.put_avatar(&ada, png).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    for size in [64, 256] {
        let image = app.avatar(&ada, &ada.id, Some(size)).await;
        let text = String::from_utf8_lossy(&image.bytes);
        assert!(!text.contains("secret-marker"));
        assert!(!text.contains("tEXt"));
    }
}

async fn an_unchanged_avatar_answers_304_to_its_etag(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for upload in [false, true] {
        if upload {
            app.put_avatar(&ada, images::png(80, 80)).await;
        }
        let first = app.avatar(&ada, &ada.id, Some(64)).await;
        let etag = first.header("etag");
        let second = app
            .send(
                app.client
                    .get(app.url(&format!("/api/v1/users/{}/avatar?size=64", ada.id)))
                    .bearer_auth(&ada.token)
                    .header("if-none-match", &etag),
            )
            .await;
        assert_eq!(second.status, StatusCode::NOT_MODIFIED);
        assert_eq!(second.header("etag"), etag);
        assert!(second.bytes.is_empty());
        // The other size has another tag.
        assert_ne!(
            app.avatar(&ada, &ada.id, Some(256)).await.header("etag"),
            etag
        );
    }
}

async fn deleting_the_avatar_brings_back_the_generated_one(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    app.put_avatar(&ada, images::png(64, 64)).await;
    let answer = app.delete_avatar(&ada).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let me = app.me(&ada).await;
    assert_eq!(me.body["has_avatar"], false);
    assert!(
        me.body["avatar_url"]
            .as_str()
            .unwrap()
            .ends_with("v=default")
    );
    let image = app.avatar(&ada, &ada.id, Some(256)).await;
    assert_eq!(image.header("content-type"), "image/svg+xml");
    // Deleting again is fine.
    assert_eq!(app.delete_avatar(&ada).await.status, StatusCode::NO_CONTENT);
}

async fn others_see_the_avatar_and_an_unknown_size_is_refused(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let bob = app.sign_up("Bob").await;
    app.put_avatar(&ada, images::png(128, 128)).await;
    let theirs = app.avatar(&bob, &ada.id, Some(64)).await;
    assert_eq!(theirs.status, StatusCode::OK);
    assert_eq!(
        theirs.bytes,
        app.avatar(&ada, &ada.id, Some(64)).await.bytes
    );
    let bad = app.avatar(&bob, &ada.id, Some(100)).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "invalid_field");
    let unknown = app
        .avatar(&bob, &uuid::Uuid::new_v4().to_string(), None)
        .await;
    assert_eq!(unknown.code(), "user_not_found");
}

async fn a_50_mb_upload_is_refused_as_too_large(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    // A real PNG start, declaring 50 MB: refused from the declared length, before
    // the body is read (the client has sent only 64 KiB when the answer comes).
    let mut start = images::png(8, 8);
    start.resize(64 * 1024, 0);
    let answer = app
        .raw_put_avatar(&ada, Some(50 * 1024 * 1024), &start)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "payload_too_large");
    // Just over the limit, sent whole.
    let mut bytes = images::png(8, 8);
    bytes.resize(5 * 1024 * 1024 + 1, 0);
    let answer = app.raw_put_avatar(&ada, Some(bytes.len()), &bytes).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "payload_too_large");
    assert_eq!(app.me(&ada).await.body["has_avatar"], false);
}

async fn a_streamed_upload_without_a_length_is_cut_off_at_the_limit(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let mut bytes = images::png(8, 8);
    bytes.resize(5 * 1024 * 1024 + 64 * 1024, 0);
    let answer = app.raw_put_avatar(&ada, None, &bytes).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.code(), "payload_too_large");
}

async fn a_png_bomb_is_refused_from_its_header(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for (w, h) in [(100_000, 100_000), (8193, 1), (5000, 5000)] {
        let bomb = images::png_claiming(w, h);
        assert!(bomb.len() < 100);
        let answer = app.put_avatar(&ada, bomb).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{w}x{h}");
        assert_eq!(answer.code(), "image_too_large", "{w}x{h}");
    }
}

async fn a_real_25_megapixel_png_is_refused_before_decoding(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let big = image::DynamicImage::new_luma8(5000, 5000);
    let bytes = images::encode(&big, image::ImageFormat::Png);
    assert!(bytes.len() < 5 * 1024 * 1024, "{}", bytes.len());
    let answer = app.put_avatar(&ada, bytes).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "image_too_large");
}

async fn a_file_named_png_that_is_not_an_image_is_unsupported(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    for body in [
        b"<?php system($_GET['c']); ?>".to_vec(),
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>".to_vec(),
        b"%PDF-1.7 not an image".to_vec(),
        vec![0u8; 4096],
    ] {
        let answer = app.put_avatar(&ada, body).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(answer.code(), "unsupported_image");
    }
}

async fn a_gif_is_unsupported(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let answer = app.put_avatar(&ada, gif.to_vec()).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_image");
}

async fn a_truncated_jpeg_is_an_invalid_image(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let jpeg = images::jpeg(400, 400);
    for cut in [jpeg.len() / 2, 200, 20, 3] {
        let answer = app.put_avatar(&ada, jpeg[..cut].to_vec()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cut at {cut}"
        );
        assert_eq!(answer.code(), "invalid_image", "cut at {cut}");
    }
    assert_eq!(app.me(&ada).await.body["has_avatar"], false);
}

async fn a_truncated_png_is_an_invalid_image(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let png = images::png(400, 400);
    for cut in [png.len() / 2, 40, 10] {
        let answer = app.put_avatar(&ada, png[..cut].to_vec()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "cut at {cut}"
        );
        assert_eq!(answer.code(), "invalid_image", "cut at {cut}");
    }
}

async fn an_empty_upload_is_unsupported(app: TestApp) {
    let ada = app.sign_up("Ada Lovelace").await;
    let answer = app.put_avatar(&ada, Vec::new()).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer.code(), "unsupported_image");
}
